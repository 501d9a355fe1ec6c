"""The worker processes: a ``ProcessPoolExecutor`` that can be killed and started again.

A pool whose worker died is broken for good (every pending future fails with
``BrokenProcessPool``); the engine then throws it away and the next submit builds a new
one. ``generation`` tells futures of the old pool from those of the new.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pixelmill.engine.forkserver import worker_context
from pixelmill.engine.task import RenderTask, TaskFunction, TaskResult, init_worker, run_guarded

_SUBMIT_ATTEMPTS = 3


class WorkerPool:
    def __init__(self, workers: int, max_tasks_per_child: int) -> None:
        self.workers = workers
        self.max_tasks_per_child = max_tasks_per_child
        self.generation = 0
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, function: TaskFunction, task: RenderTask) -> Future[TaskResult]:
        """Run ``function(task)`` in a worker under the task's time limit."""
        for _ in range(_SUBMIT_ATTEMPTS):
            executor = self._ensure()
            try:
                return executor.submit(run_guarded, function, task)
            except (BrokenProcessPool, RuntimeError):
                self.discard()
        raise RuntimeError("cannot start worker processes")

    def discard(self, wait: bool = False) -> None:
        """Let go of the current workers (the next submit starts new ones)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def kill(self) -> None:
        """SIGKILL every worker: the only way to stop one stuck in native code."""
        executor = self._executor
        if executor is None:
            return
        # ProcessPoolExecutor has no public "kill" before Python 3.14; its process table is
        # the only handle on a worker stuck in native code.
        processes = dict(getattr(executor, "_processes", None) or {})
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.kill()

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=worker_context(),
                initializer=init_worker,
                initargs=(os.getpid(),),
                max_tasks_per_child=self.max_tasks_per_child,
            )
            self.generation += 1
        return self._executor
