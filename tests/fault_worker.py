"""``pixelmill worker`` with a render that crashes, hangs or slows down on demand (fault tests).

Run as ``python tests/fault_worker.py --concurrency N`` (or ``python -m fault_worker`` with
tests/ on ``PYTHONPATH``, which is what ``celery_helpers.start_worker(module=...)`` does)
with the usual PIXELMILL_* settings plus:

- ``PIXELMILL_TEST_CRASH_SHAS``: comma-separated sha256s whose render kills its pool process
  (``os._exit(137)``, as the kernel's OOM killer would);
- ``PIXELMILL_TEST_HANG_SHAS``: sha256s whose render sleeps forever (the soft time limit's
  exception still interrupts the sleep, as it would a slow decoder in Python code);
- ``PIXELMILL_TEST_STUCK_SHAS``: sha256s whose render sleeps with the soft time limit's
  signal blocked (hung C code): only the hard time limit ends it;
- ``PIXELMILL_TEST_RENDER_DELAY_S``: every render first sleeps this long (a kill then lands
  mid-batch);
- ``PIXELMILL_TEST_SLOW_WRITE_SHAS``: sha256s whose rendition files stay
  ``PIXELMILL_TEST_WRITE_DELAY_S`` (default 0.5) seconds in their temp file before the
  rename (a slow disk), so a test can act while a worker's temp files exist;
- ``PIXELMILL_TEST_RENDER_LOG``: a file that gets one line per render start,
  ``<sha256> <pid> <worker pid> <unix time>``, so a test counts renders exactly.

The hooks live here, patched over ``pixelmill.engine.task.render_renditions`` and
``pixelmill.core.encode.write_atomically`` before the worker forks its pool: production
code has none.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CRASH_EXIT_CODE = 137
_HANG_STEP_S = 3600.0


def sha_set(variable: str) -> frozenset[str]:
    """The sha256s listed (comma-separated) in the environment variable ``variable``."""
    return frozenset(s.strip() for s in os.environ.get(variable, "").split(",") if s.strip())


def log_render_start(path: str, sha256: str) -> None:
    """Append one line for a render that starts; O_APPEND keeps concurrent lines whole."""
    line = f"{sha256} {os.getpid()} {os.getppid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def hang_forever() -> None:
    while True:
        time.sleep(_HANG_STEP_S)


def stuck_forever() -> None:
    """Sleep with SIGUSR1 (Celery's soft time limit) blocked: only SIGKILL ends this."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    hang_forever()


def faulty(render: Callable[..., Any]) -> Callable[..., Any]:
    """``render`` (``render_renditions``) with the faults the environment asks for."""
    crash = sha_set("PIXELMILL_TEST_CRASH_SHAS")
    hang = sha_set("PIXELMILL_TEST_HANG_SHAS")
    stuck = sha_set("PIXELMILL_TEST_STUCK_SHAS")
    delay_s = float(os.environ.get("PIXELMILL_TEST_RENDER_DELAY_S", "0") or 0)
    render_log = os.environ.get("PIXELMILL_TEST_RENDER_LOG")

    def render_with_faults(*args: Any, **kwargs: Any) -> Any:
        # render_renditions(source, out_dir, spec, sha256, *, only=..., should_cancel=...)
        sha256 = str(kwargs["sha256"] if "sha256" in kwargs else args[3])
        if render_log:
            log_render_start(render_log, sha256)
        if sha256 in crash:
            os._exit(CRASH_EXIT_CODE)
        if sha256 in stuck:
            stuck_forever()
        if sha256 in hang:
            hang_forever()
        if delay_s > 0:
            time.sleep(delay_s)
        return render(*args, **kwargs)

    return render_with_faults


def slow_writes(write_atomically: Callable[..., int]) -> Callable[..., int]:
    """``write_atomically`` that, for the listed sha256s, waits with the temp file written."""
    slow = sha_set("PIXELMILL_TEST_SLOW_WRITE_SHAS")
    delay_s = float(os.environ.get("PIXELMILL_TEST_WRITE_DELAY_S", "0.5") or 0.5)

    def write_slowly(path: Path, write: Callable[[Any], object]) -> int:
        if path.parent.name not in slow:  # renditions/<sha[:2]>/<sha>/<file>
            return write_atomically(path, write)

        def write_then_wait(file: Any) -> None:
            write(file)
            file.flush()
            time.sleep(delay_s)

        return write_atomically(path, write_then_wait)

    return write_slowly


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)

    from pixelmill.config import ConfigError, load_settings
    from pixelmill.core import encode
    from pixelmill.engine import task

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"fault_worker: {exc}", file=sys.stderr)
        return 2
    task.render_renditions = faulty(task.render_renditions)  # type: ignore[attr-defined]
    encode.write_atomically = slow_writes(encode.write_atomically)

    from pixelmill.engine.celery_worker import run_worker

    return run_worker(settings, args.concurrency)


if __name__ == "__main__":
    sys.exit(main())
