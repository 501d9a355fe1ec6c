"""The task a worker process runs: render one image, write its manifest, return a summary.

Module-level and small on both sides of the process boundary: a path and a spec in, a
``TaskResult`` (no pixels, no image bytes) out.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixelmill.core.encode import remove_temp_files
from pixelmill.core.manifest import (
    manifest_dict,
    read_manifest_file,
    render_result_from_manifest,
    write_manifest,
)
from pixelmill.core.render import render_renditions
from pixelmill.core.specs import RenderResult, RenderSpec, Rendition
from pixelmill.errors import ErrorCode, ImageError

log = logging.getLogger(__name__)

# Exit status of a worker that ran out of time on an image (see _Watchdog).
TIMEOUT_EXIT_STATUS = 86
ORPHAN_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True)
class RenderTask:
    job_id: str
    source: str
    sha256: str
    out_dir: str
    spec: RenderSpec
    only: frozenset[str] | None  # None: every rendition of the spec
    cancel_flags: tuple[str, ...]  # files whose existence means "stop between renditions"
    timeout_marker: str  # written just before the watchdog ends a stuck worker


@dataclass(frozen=True)
class TaskResult:
    job_id: str
    result: RenderResult | None
    error_code: ErrorCode | None = None
    error_message: str | None = None


def init_worker(engine_pid: int) -> None:
    """Worker start-up: Ctrl-C is the parent's business, and native decoders stay quiet.

    libtiff and friends write complaints about damaged files straight to file descriptor 2;
    the image's outcome already says what went wrong, so a worker's stderr goes nowhere.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    watcher = threading.Thread(target=_exit_when_gone, args=(engine_pid,), daemon=True)
    watcher.start()


def _exit_when_gone(engine_pid: int) -> None:
    """End this worker once the engine's process is gone (killed before it could stop us).

    An idle pool worker blocks on its task queue forever otherwise: it holds both ends of
    that pipe, so it never sees the engine's side close.
    """
    while True:
        time.sleep(ORPHAN_CHECK_INTERVAL_S)
        try:
            os.kill(engine_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            continue


class _Watchdog:
    """Ends this worker process if an image outlives its time limit.

    A decoder stuck in C cannot be interrupted from Python; the parent sees the worker die,
    finds the marker file and reports ``timeout`` for this image only.
    """

    def __init__(self, seconds: float, marker: str) -> None:
        self._timer = threading.Timer(seconds, self._expire, args=(marker,))
        self._timer.daemon = True

    @staticmethod
    def _expire(marker: str) -> None:
        try:
            Path(marker).touch()
        finally:
            os._exit(TIMEOUT_EXIT_STATUS)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


TaskFunction = Callable[[RenderTask], TaskResult]


def run_guarded(function: TaskFunction, task: RenderTask) -> TaskResult:
    """Run ``function(task)`` in a worker under the image's time limit."""
    with _Watchdog(task.spec.limits.timeout_s, task.timeout_marker):
        return function(task)


def run_render_task(task: RenderTask) -> TaskResult:
    """Render ``task`` and write its manifest; every failure becomes a TaskResult."""
    out_dir = Path(task.out_dir)

    def should_cancel() -> bool:
        return any(os.path.exists(flag) for flag in task.cancel_flags)

    if should_cancel():
        return TaskResult(task.job_id, None, ErrorCode.CANCELLED, "cancelled before it started")
    try:
        result = render_renditions(
            task.source,
            out_dir,
            task.spec,
            task.sha256,
            only=task.only,
            should_cancel=should_cancel,
        )
        result = _merge_with_existing(result, out_dir, task.spec)
        write_manifest(out_dir, manifest_dict(result))
        return TaskResult(task.job_id, result)
    except ImageError as exc:
        remove_temp_files(out_dir)
        return TaskResult(task.job_id, None, exc.code, exc.message)
    except OSError as exc:  # the output side: a read-only or full disk is not the image's fault
        remove_temp_files(out_dir)
        return TaskResult(task.job_id, None, ErrorCode.INTERNAL, f"cannot write renditions: {exc}")
    except Exception as exc:  # a bug of ours: that image fails, the run goes on
        remove_temp_files(out_dir)
        log.exception("internal error rendering %s", task.source)
        return TaskResult(task.job_id, None, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")


def _merge_with_existing(result: RenderResult, out_dir: Path, spec: RenderSpec) -> RenderResult:
    """When only missing renditions were rendered, the manifest lists the old ones too."""
    existing = read_manifest_file(out_dir)
    if existing is None:
        return result
    previous = render_result_from_manifest(existing)
    if previous is None:
        return result
    fresh = {r.filename for r in result.renditions}
    kept = [
        r
        for r in previous.renditions
        if r.filename not in fresh and (out_dir / r.filename).is_file()
    ]
    order = {name: i for i, name in enumerate(spec.rendition_names())}
    merged: list[Rendition] = sorted(
        [*kept, *result.renditions], key=lambda r: order.get(r.filename, len(order))
    )
    return RenderResult(result.sha256, result.source, tuple(merged), result.timings)
