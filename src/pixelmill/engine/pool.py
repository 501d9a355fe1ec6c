"""The worker processes: one pipe per worker, so the engine knows who holds which task.

A worker that dies or runs out of time costs only the task it held: the engine kills or
loses that one process and the pool starts a replacement from the fork server (a few
milliseconds), while the other workers carry on. Each worker has a reader thread in the
engine's process that turns what comes down its pipe into ``on_result`` and, once the pipe
closes, ``on_exit`` with the exit status. Pipes are socket pairs: no named semaphore is
created, so a killed engine leaves nothing in ``/dev/shm``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing.process
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from pixelmill.engine.forkserver import worker_context
from pixelmill.engine.task import RenderTask, TaskFunction, TaskResult
from pixelmill.engine.worker import CancelTask, TimedOut, worker_main

log = logging.getLogger(__name__)

_EXIT_WAIT_S = 5.0  # how long a reader waits for the exit status of a worker whose pipe closed


@dataclass(eq=False)  # compared by identity: each is one process
class Worker:
    process: BaseProcess
    conn: Connection
    number: int
    started_s: float  # how long starting the process took
    tasks: int = 0  # tasks sent to it; at max_tasks_per_child it exits after the last one
    busy: bool = False
    exited: bool = False
    timed_out: bool = False  # its watchdog said so before ending it
    reader: threading.Thread | None = field(default=None, repr=False)


ResultCallback = Callable[[Worker, TaskResult], None]
ExitCallback = Callable[[Worker, int | None], None]


class WorkerPool:
    """``size`` worker processes started from the fork server, each with its own pipe.

    Only the dispatcher thread calls the methods below; the callbacks run on the readers.
    """

    def __init__(
        self,
        size: int,
        max_tasks_per_child: int,
        function: TaskFunction,
        on_result: ResultCallback,
        on_exit: ExitCallback,
    ) -> None:
        self.size = max(1, size)
        self.max_tasks_per_child = max(1, max_tasks_per_child)
        self._function = function
        self._on_result = on_result
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._numbers = itertools.count(1)
        self.last_start_s = 0.0  # how long the latest worker took to start (for metrics)

    def fill(self) -> None:
        """Start workers until ``size`` of them can take a task (at start, and after exits)."""
        while self._available_count() < self.size:
            self._start_worker()

    def run(self, task: RenderTask) -> Worker:
        """Send ``task`` to an idle worker (started if need be); RuntimeError if none can run."""
        for _ in range(3):
            worker = self._idle() or self._start_worker()
            worker.tasks += 1
            worker.busy = True
            try:
                worker.conn.send(task)
                return worker
            except OSError:  # it died a moment ago: its reader reports that
                worker.busy = False
                worker.tasks = self.max_tasks_per_child  # never again
            except Exception as exc:  # the task cannot be pickled: nothing was sent
                worker.busy = False
                worker.tasks -= 1
                raise RuntimeError(f"cannot send the task to a worker: {exc}") from exc
        raise RuntimeError("cannot hand a task to a worker process")

    def task_done(self, worker: Worker) -> None:
        """The worker's result arrived: it is free (or exiting, at its task limit)."""
        worker.busy = False

    def cancel(self, worker: Worker, job_id: str) -> None:
        """Ask the worker to stop ``job_id`` between renditions."""
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send(CancelTask(job_id))

    def kill(self, worker: Worker) -> None:
        """SIGKILL one worker: the only way to stop one stuck in native code."""
        with contextlib.suppress(Exception):
            worker.process.kill()

    def kill_all(self) -> None:
        for worker in self._live():
            self.kill(worker)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every worker (idle ones exit at once) and wait for them; kill stragglers.

        Only a worker's reader thread waits on its process: two threads reading one exit
        status from the fork server would lose it.
        """
        workers = self._all()
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            if worker.reader is not None:
                worker.reader.join(max(0.0, deadline - time.monotonic()))
                if worker.reader.is_alive():
                    self.kill(worker)
                    worker.reader.join(_EXIT_WAIT_S * 2)
            self.forget(worker)

    def forget(self, worker: Worker) -> None:
        """Close the pipe of a worker that exited (its reader is done with it).

        Only the dispatcher sends and closes: a pipe closed by another thread could have
        its descriptor reused under a send in flight.
        """
        with contextlib.suppress(OSError):
            worker.conn.close()

    # ---- internals ----------------------------------------------------------------

    def _all(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)

    def _live(self) -> list[Worker]:
        return [w for w in self._all() if not w.exited]

    def _available_count(self) -> int:
        return sum(1 for w in self._live() if w.tasks < self.max_tasks_per_child or w.busy)

    def _idle(self) -> Worker | None:
        for worker in self._live():
            if not worker.busy and worker.tasks < self.max_tasks_per_child:
                return worker
        return None

    def _start_worker(self) -> Worker:
        context = worker_context()
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_end, os.getpid(), self._function, self.max_tasks_per_child),
            name="pixelmill-worker",
            daemon=True,
        )
        began = time.perf_counter()
        try:
            process.start()
        except Exception as exc:
            parent_end.close()
            raise RuntimeError(f"cannot start a worker process: {exc}") from exc
        finally:
            child_end.close()  # the worker's copy is the only one: its death closes the pipe
        self.last_start_s = time.perf_counter() - began
        # multiprocessing polls every child it lists (at each start, and whenever anything
        # in this process calls active_children()): a poll racing the reader's join reads
        # the exit status first and the reader's gives 255. The reader alone reads it.
        getattr(multiprocessing.process, "_children", set()).discard(process)
        worker = Worker(process, parent_end, next(self._numbers), self.last_start_s)
        worker.reader = threading.Thread(
            target=self._read, args=(worker,), name=f"pixelmill-worker-{worker.number}"
        )
        worker.reader.daemon = True
        with self._lock:
            self._workers.append(worker)
        worker.reader.start()
        return worker

    def _read(self, worker: Worker) -> None:
        """Reader thread: results as they come, then the worker's exit status."""
        while True:
            try:
                message = worker.conn.recv()
            except Exception:  # closed (the worker exited or was killed), or a torn message
                break
            if isinstance(message, TaskResult):
                self._on_result(worker, message)
            elif isinstance(message, TimedOut):
                worker.timed_out = True
        worker.process.join(_EXIT_WAIT_S)
        if worker.process.exitcode is None:  # pipe closed yet still running: not ours to trust
            self.kill(worker)
            worker.process.join(_EXIT_WAIT_S)
        exitcode = worker.process.exitcode
        with self._lock:
            worker.exited = True
            self._workers.remove(worker)
        self._on_exit(worker, exitcode)
