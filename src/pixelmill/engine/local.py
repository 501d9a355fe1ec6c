"""The local engine: worker processes on this machine, fed by one dispatcher thread.

The dispatcher admits queued jobs while a worker is free and the memory budget allows
(``admission``: batches take turns, the costliest image of a batch first), de-duplicates
by SHA-256 (``dedupe``), hands each job to one worker over its own pipe (``pool``), passes
cancels on (``cancel``) and turns what comes back, or a worker's death (``recovery``), into
exactly one outcome per job (``outcomes``). A crash or a timeout costs only its own job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pixelmill.core.specs import RenderSpec
from pixelmill.engine.admission import (
    AdmissionQueue,
    Entry,
    cores_for,
    decode_cost,
)
from pixelmill.engine.base import ErrorInfo, ImageJob, ImageOutcome, OutcomeCallback, StartCallback
from pixelmill.engine.cancel import CancelRegistry, remove_orphaned_flag_folders
from pixelmill.engine.choices import ChosenSpecs
from pixelmill.engine.dedupe import InFlight
from pixelmill.engine.outcomes import CANCELLED, Outcomes, WorkerEvent
from pixelmill.engine.pool import Worker, WorkerPool
from pixelmill.engine.recovery import KillReason, Running, error_for_exception
from pixelmill.engine.task import RenderTask, TaskResult, run_render_task
from pixelmill.errors import ErrorCode
from pixelmill.states import ImageStatus
from pixelmill.storage import Storage, StorageUnavailable

log = logging.getLogger(__name__)

_WAKE_INTERVAL_S = 0.5


class LocalEngine(Outcomes):
    """Runs image jobs on worker processes; see the module docstring."""

    def __init__(
        self,
        spec: RenderSpec,
        storage: Storage,
        *,
        workers: int,
        memory_budget_bytes: int,
        max_tasks_per_child: int,
        on_outcome: OutcomeCallback,
        on_start: StartCallback | None = None,
        work_dir: Path | None = None,
        queue_size: int = 256,
        task_function: Callable[[RenderTask], TaskResult] = run_render_task,
    ) -> None:
        """``task_function`` is what workers run (tests inject faults). The engine writes no
        files of its own (cancels and timeouts travel on each worker's pipe); in
        ``work_dir`` it removes the cancel-flag folders earlier versions left there."""
        self.spec = spec  # the catalogue; each job renders its own choice of it
        self._chosen = ChosenSpecs(spec)
        self.storage = storage
        self.workers = max(1, workers)
        self.memory_budget_bytes = memory_budget_bytes
        self.max_tasks_per_child = max_tasks_per_child
        self._on_outcome = on_outcome
        self._on_start = on_start
        self._queue_size = max(1, queue_size)
        self._work_dir = Path(work_dir) if work_dir is not None else None

        self._cond = threading.Condition()
        # Held while one job is admitted (cancel check .. on_start), so that a cancel that
        # returns has either stopped a job or seen it start: never something in between.
        self._admission = threading.RLock()
        self._queue = AdmissionQueue()
        self._events: deque[WorkerEvent] = deque()
        self._cancels = CancelRegistry()
        self._closing = False
        self._kill_running = False
        self._dropped: list[ImageJob] = []
        self._drop_queued = False
        self._changes = 0  # bumped by every submit, cancel and worker event: "look again"
        self._outstanding = 0  # submitted jobs whose outcome has not been reported yet
        self._failure: ErrorInfo | None = None  # set when the dispatcher died of a bug

        # Owned by the dispatcher thread only.
        self._running: dict[Worker, Running] = {}
        self._in_flight: InFlight[Running] = InFlight()
        self._pool = WorkerPool(
            self.workers, max_tasks_per_child, task_function, self._on_result, self._on_exit
        )
        self._pool_broken = False
        self._thread: threading.Thread | None = None

    # ---- public API -------------------------------------------------------------------

    def start(self) -> LocalEngine:
        if self._work_dir is not None:
            remove_orphaned_flag_folders(self._work_dir)
        self._thread = threading.Thread(target=self._dispatch, name="pixelmill-dispatcher")
        self._thread.daemon = True
        self._thread.start()
        return self

    def submit(self, job: ImageJob) -> None:
        """Queue a job; blocks while the queue is full (so a huge folder runs in bounded memory)."""
        with self._cond:
            while len(self._queue) >= self._queue_size and not self._closing:
                self._cond.wait()
            failure = self._failure
            if failure is None:
                if self._closing:
                    raise RuntimeError("the engine is shutting down")
                self._queue.append(Entry(job))
                self._cancels.job_added(job.batch_id)
                self._outstanding += 1
                self._changed()
                return
        # The dispatcher died of a bug: fail the job rather than lose it.
        self._call(self._on_outcome, ImageOutcome(job, ImageStatus.FAILED, None, failure))

    def cancel_batch(self, batch_id: str) -> None:
        """No job of the batch starts after this returns; running ones stop between renditions."""
        with self._admission, self._cond:
            self._cancels.cancel(batch_id)
            self._changed()

    def admission_lock(self) -> threading.RLock:
        """While held, no job starts (stored content is erased meanwhile)."""
        return self._admission

    def is_rendering(self, sha256: str) -> bool:
        """A worker renders this content now (its result is not in yet)."""
        return self._in_flight.is_rendering(sha256)

    def cancel_all(self) -> None:
        """Cancel every queued and running job (Ctrl-C)."""
        with self._cond:
            self._cancels.cancel_all()
            self._changed()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has its outcome; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._outstanding and self.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else _WAKE_INTERVAL_S)
        return True

    def shutdown(
        self, *, cancel_pending: bool = False, kill_after_s: float | None = None
    ) -> list[ImageJob]:
        """Stop the engine and return the jobs that never started.

        Running jobs finish (or, after ``kill_after_s``, their workers are killed and they
        are cancelled). Queued jobs are cancelled when ``cancel_pending``, else returned.
        Every worker process has exited when this returns.
        """
        with self._cond:
            if cancel_pending:
                self._cancels.cancel_all()
            else:
                self._drop_queued = True
            self._closing = True
            self._changed()
        if self._thread is not None:
            self._thread.join(kill_after_s)
            if self._thread.is_alive():
                self.kill_running()
                self._thread.join()
        self._pool.close()
        with self._cond:
            # The exits nobody collects any more hold each worker's process, and with it
            # the descriptor its exit status came on: let them go with the workers.
            self._events.clear()
            dropped, self._dropped = self._dropped, []
        return dropped

    def kill_running(self) -> None:
        """Kill the workers of running jobs now (they end ``cancelled``); safe from a signal
        handler, as the lock is re-entrant."""
        with self._cond:
            self._kill_running = True
            self._changed()

    # ---- worker events (reader threads) ----------------------------------------------

    def _on_result(self, worker: Worker, result: TaskResult) -> None:
        with self._cond:
            self._events.append((worker, result, None))
            self._changed()

    def _on_exit(self, worker: Worker, exitcode: int | None) -> None:
        with self._cond:
            self._events.append((worker, None, exitcode))
            self._changed()

    def _changed(self) -> None:
        """Wake the dispatcher (and join/submit waiters); the caller holds ``_cond``."""
        self._changes += 1
        self._cond.notify_all()

    # ---- dispatcher -------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            while True:
                with self._cond:
                    seen = self._changes
                self._sweep_cancelled()
                self._collect()
                self._signal_cancels()
                self._enforce_deadlines()
                self._admit()
                self._fill_pool()
                with self._cond:
                    if (
                        self._closing
                        and not self._running
                        and (not self._queue or self._drop_queued)
                    ):
                        self._drop_remaining()
                        return
                    if self._changes == seen:  # nothing happened since this round began
                        self._cond.wait(self._next_wake())
        except Exception as exc:  # a bug here must not hang callers: fail what is left
            log.exception("the dispatcher stopped on an internal error")
            self._fail_everything(exc)

    def _next_wake(self) -> float:
        if not self._running:
            return _WAKE_INTERVAL_S
        soonest = min(r.deadline for r in self._running.values())
        return max(0.01, min(_WAKE_INTERVAL_S, soonest - time.monotonic()))

    def _fill_pool(self) -> None:
        """Keep ``workers`` processes ready: at start, and after one exits or retires."""
        if self._closing:
            return
        try:
            self._pool.fill()
            self._pool_broken = False
        except RuntimeError:
            if not self._pool_broken:  # said once, not every round
                log.exception("cannot start worker processes")
            self._pool_broken = True

    def _sweep_cancelled(self) -> None:
        """Queued jobs of cancelled batches get their outcome now, not when they reach the head;
        so do copies waiting for a render of another batch (not when that render ends)."""
        with self._cond:
            doomed = self._queue.remove_where(self._is_cancelled)
            if doomed:
                self._cond.notify_all()
        doomed += self._in_flight.remove_followers_where(self._is_cancelled)
        for entry in doomed:
            self._settle(entry, ImageStatus.CANCELLED, None, CANCELLED)

    def _is_cancelled(self, job: ImageJob) -> bool:
        return self._cancels.is_cancelled(job.batch_id)

    def _signal_cancels(self) -> None:
        """Tell each worker whose job was cancelled (or must stop now) to stop it."""
        with self._cond:
            kill = self._kill_running
        for running in self._running.values():
            if kill and running.killed is None:
                running.killed = KillReason.SHUTDOWN
                self._pool.kill(running.worker)
            elif not running.cancel_sent and self._is_cancelled(running.entry.job):
                running.cancel_sent = True
                self._pool.cancel(running.worker, running.entry.job.job_id)

    def _enforce_deadlines(self) -> None:
        """The backstop: kill a worker too stuck to run its own watchdog."""
        now = time.monotonic()
        for running in self._running.values():
            if running.deadline < now and running.killed is None:
                running.killed = KillReason.TIMEOUT
                self._pool.kill(running.worker)

    # ---- admission ----------------------------------------------------------------------

    def _admit(self) -> None:
        """Start jobs while a worker is free and memory allows; see ``admission``.

        A job that does not fit the memory budget is waited for, not overtaken, so a huge
        image cannot starve behind a stream of small ones.
        """
        while True:
            with self._cond:
                if not self._queue or self._drop_queued or len(self._running) >= self.workers:
                    return
                turns = self._queue.batches_in_turn()
            with self._admission:
                entry = self._choose(turns)
                if entry is None:
                    continue  # every entry looked at was settled without a worker
                try:
                    if not self._start_or_settle(entry):
                        return
                except Exception as exc:
                    self._fail_entry(entry, exc)

    def _choose(self, turns: list[str]) -> Entry | None:
        """The costliest entry still needing a worker, of the first batch (in turn) with one."""
        for batch_id in turns:
            with self._cond:
                window = self._queue.window(batch_id)
            waiting = [e for e in window if e.cost is not None or self._first_look(e)]
            if waiting:
                return max(waiting, key=lambda e: e.cost or 0)
        return None

    def _first_look(self, entry: Entry) -> bool:
        """Settle ``entry`` if it needs no worker (cancelled, copy, duplicate, bad header);
        else record its decode cost. True when it still needs a worker."""
        try:
            if self._missing_or_settle(entry) is None:
                return False
            spec = self._chosen.of(entry.job)
            entry.cost = decode_cost(entry.job.source, spec)
            return True
        except Exception as exc:  # this image fails; the engine goes on
            self._fail_entry(entry, exc)
            return False

    def _fail_entry(self, entry: Entry, exc: Exception) -> None:
        error = error_for_exception(exc, entry.job.source)
        if isinstance(exc, StorageUnavailable):  # not a bug: one line, no traceback
            log.warning("image %s failed: %s", entry.job.source, exc.message)
        elif error.code is ErrorCode.INTERNAL:
            log.error("image %s failed in the engine", entry.job.source, exc_info=exc)
        self._remove(entry)
        self._settle(entry, ImageStatus.FAILED, None, error)

    def _missing_or_settle(self, entry: Entry) -> frozenset[str] | None:
        """The renditions ``entry`` still needs, or None once it was settled without a
        worker (cancelled, a copy of bytes in flight, or rendered before)."""
        job = entry.job
        if self._is_cancelled(job):
            self._remove(entry)
            self._settle(entry, ImageStatus.CANCELLED, None, CANCELLED)
            return None
        try:
            spec = self._chosen.of(job)
        except ValueError as exc:  # resumed with a choice the catalogue no longer has
            self._remove(entry)
            error = ErrorInfo(ErrorCode.INVALID_REQUEST, str(exc))
            self._settle(entry, ImageStatus.FAILED, None, error)
            return None
        if self._in_flight.is_rendering(job.sha256):
            self._remove(entry)
            self._in_flight.wait_for(job.sha256, entry)
            return None
        missing = self.storage.missing_renditions(job.sha256, spec)
        if not missing:
            self._remove(entry)  # rendered before: no need to even read the header
            self._emit_duplicate(entry)
            return None
        return missing

    def _start_or_settle(self, entry: Entry) -> bool:
        """Start ``entry`` (checked again: things change while it waits); False if it must
        wait for memory."""
        missing = self._missing_or_settle(entry)
        if missing is None:
            return True
        cost = entry.cost or 0
        in_use = sum(r.cost for r in self._running.values())
        if self._running and in_use + cost > self.memory_budget_bytes:
            return False
        job = entry.job
        spec = self._chosen.of(job)
        only = None if len(missing) == len(spec.rendition_names()) else missing
        with self._cond:
            self._queue.take(entry)
            self._cond.notify_all()
            queued = len(self._queue)
        lent = sum(r.task.threads for r in self._running.values())
        budget = self.memory_budget_bytes
        threads = cores_for(
            workers=self.workers, lent=lent, queued=queued, in_use=in_use, cost=cost, budget=budget
        )
        task = RenderTask(job.job_id, job.source, job.sha256, self.storage, spec, only, threads)
        try:
            worker = self._pool.run(task)
        except RuntimeError as exc:  # no worker process can be started at all
            self._settle(entry, ImageStatus.FAILED, None, ErrorInfo(ErrorCode.INTERNAL, str(exc)))
            return True
        now = time.monotonic()
        timeout = self.spec.limits.timeout_s
        # The worker's own watchdog fires at `timeout`; the deadline is the backstop for a
        # worker too stuck to run its watchdog thread.
        deadline = now + timeout + max(5.0, timeout / 4)
        running = Running(entry, worker, task, now, deadline, cost)
        self._running[worker] = running
        self._in_flight.claim(job.sha256, running)
        if self._on_start is not None:
            self._call(self._on_start, job)
        return True

    def _remove(self, entry: Entry) -> None:
        with self._cond:
            if self._queue.remove(entry):
                self._cond.notify_all()
