"""``python -m bench.distributed_hooks serve|worker ...``: the pixelmill CLI, timestamping tasks.

The distributed section measures the queue overhead (a task enqueued -> its task starting
in a worker) without a hook in production code: this wrapper connects Celery's
``after_task_publish`` (in the service) and ``task_prerun`` (in each pool process, connected
before the pool forks) to append ``<event> <task id> <unix time>`` lines to the file named
by ``PIXELMILL_BENCH_TASK_LOG``, then runs the ordinary command line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

TASK_LOG_VARIABLE = "PIXELMILL_BENCH_TASK_LOG"


def _append(event: str, task_id: object) -> None:
    path = os.environ.get(TASK_LOG_VARIABLE)
    if not path or not task_id:
        return
    line = f"{event} {task_id} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # O_APPEND: lines from several processes stay whole
    finally:
        os.close(fd)


def _published(headers: dict[str, Any] | None = None, **_: Any) -> None:
    _append("published", (headers or {}).get("id"))


def _started(task_id: str | None = None, **_: Any) -> None:
    _append("started", task_id)


def read_task_log(path: str) -> dict[str, dict[str, float]]:
    """``{task_id: {"published": t, "started": t}}`` (the first start of each task)."""
    tasks: dict[str, dict[str, float]] = {}
    with open(path) as f:
        for line in f:
            event, task_id, at = line.split()
            tasks.setdefault(task_id, {}).setdefault(event, float(at))
    return tasks


def main() -> None:
    from celery.signals import after_task_publish, task_prerun

    from pixelmill.cli import main as pixelmill_main

    after_task_publish.connect(_published, weak=False)
    task_prerun.connect(_started, weak=False)
    sys.argv = ["pixelmill", *sys.argv[1:]]
    pixelmill_main()


if __name__ == "__main__":
    main()
