"""The local engine: a process pool on this machine, fed by one dispatcher thread.

The dispatcher admits queued jobs while there is a free worker and room in the memory
budget (each image's decode cost is estimated from its header), de-duplicates by SHA-256,
hands work to a ``ProcessPoolExecutor`` and turns what comes back into exactly one outcome
per job. It survives dead workers: the pool is rebuilt, unfinished jobs are resubmitted,
and an image that kills its worker twice is ``worker_crashed``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from pixelmill.core.manifest import render_result_from_manifest
from pixelmill.core.source import probe
from pixelmill.core.specs import RenderResult, RenderSpec
from pixelmill.engine.base import ErrorInfo, ImageJob, ImageOutcome, OutcomeCallback, StartCallback
from pixelmill.engine.pool import WorkerPool
from pixelmill.engine.task import (
    RenderTask,
    TaskResult,
    run_render_task,
)
from pixelmill.errors import ErrorCode, ImageError
from pixelmill.states import ImageStatus
from pixelmill.storage import RenditionStorage

log = logging.getLogger(__name__)

_WAKE_INTERVAL_S = 0.5


@dataclass(eq=False)  # compared by identity: the queue removes this very entry
class _Entry:
    job: ImageJob
    queued_at: float = field(default_factory=time.monotonic)
    strikes: int = 0  # times the job was running when its worker died
    isolate: bool = False  # run alone, to learn whether it is the one that kills workers
    cost: int | None = None  # estimated decode bytes, from the header


@dataclass
class _Running:
    entry: _Entry
    future: Future[TaskResult]
    pool_generation: int
    started: float
    deadline: float
    timeout_marker: Path
    killed_for_timeout: bool = False


class LocalEngine:
    """Runs image jobs on a pool of worker processes; see the module docstring."""

    def __init__(
        self,
        spec: RenderSpec,
        storage: RenditionStorage,
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
        """``work_dir`` holds this engine's cancel flags and timeout markers (default: the
        system temp folder); ``task_function`` is what workers run (tests inject faults)."""
        self.spec = spec
        self.storage = storage
        self.workers = workers
        self.memory_budget_bytes = memory_budget_bytes
        self.max_tasks_per_child = max_tasks_per_child
        self._on_outcome = on_outcome
        self._on_start = on_start
        self._queue_size = max(1, queue_size)
        self._largest_box = max(max(p.width, p.height) for p in spec.presets)

        self._task_function = task_function
        base_dir = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "pixelmill"
        self._run_dir = base_dir / f"engine-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._cancel_dir = self._run_dir / "cancel"
        self._timeout_dir = self._run_dir / "timeouts"

        self._cond = threading.Condition()
        # Held while one job is admitted (cancel check .. on_start), so that a cancel that
        # returns has either stopped a job or seen it start: never something in between.
        self._admission = threading.RLock()
        self._queue: deque[_Entry] = deque()
        self._done: deque[Future[TaskResult]] = deque()
        self._cancelled_batches: set[str] = set()
        self._cancel_all = False
        self._closing = False
        self._dropped: list[ImageJob] = []
        self._drop_queued = False
        self._events = 0  # bumped by every submit, cancel and finished task: "look again"
        self._outstanding = 0  # submitted jobs whose outcome has not been reported yet
        self._failure: ErrorInfo | None = None  # set when the dispatcher died of a bug

        # Owned by the dispatcher thread only.
        self._running: dict[Future[TaskResult], _Running] = {}
        self._by_sha: dict[str, _Running] = {}
        self._followers: dict[str, list[_Entry]] = {}
        self._pool = WorkerPool(workers, max_tasks_per_child)
        self._thread: threading.Thread | None = None

    # ---- public API -------------------------------------------------------------------

    def start(self) -> LocalEngine:
        _remove_orphaned_run_dirs(self._run_dir.parent)
        self._cancel_dir.mkdir(parents=True, exist_ok=True)
        self._timeout_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self._remove_run_dir)
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
                self._queue.append(_Entry(job))
                self._outstanding += 1
                self._events += 1
                self._cond.notify_all()
                return
        # The dispatcher died of a bug: fail the job rather than lose it.
        self._call(self._on_outcome, ImageOutcome(job, ImageStatus.FAILED, None, failure))

    def cancel_batch(self, batch_id: str) -> None:
        """No job of the batch starts after this returns; running ones stop between renditions."""
        with self._admission, self._cond:
            self._cancelled_batches.add(batch_id)
            self._cancel_flag(batch_id).touch()
            self._events += 1
            self._cond.notify_all()

    def cancel_all(self) -> None:
        """Cancel every queued and running job (Ctrl-C)."""
        with self._cond:
            self._cancel_all = True
            self._cancel_flag("*").touch()
            self._events += 1
            self._cond.notify_all()

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
        """
        with self._cond:
            if cancel_pending:
                self._cancel_all = True
                self._cancel_flag("*").touch()
            else:
                self._drop_queued = True
            self._closing = True
            self._events += 1
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(kill_after_s)
            if self._thread.is_alive():
                self._pool.kill()
                self._thread.join()
        self._pool.discard(wait=True)  # workers gone before we return
        self._remove_run_dir()
        with self._cond:
            dropped, self._dropped = self._dropped, []
        return dropped

    # ---- dispatcher -------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            while True:
                with self._cond:
                    seen = self._events
                self._sweep_cancelled()
                self._collect()
                self._enforce_deadlines()
                self._admit()
                with self._cond:
                    if (
                        self._closing
                        and not self._running
                        and not self._done
                        and (not self._queue or self._drop_queued)
                    ):
                        self._drop_remaining()
                        return
                    if self._events == seen:  # nothing happened since this round began
                        self._cond.wait(self._next_wake())
        except Exception as exc:  # a bug here must not hang callers: fail what is left
            log.exception("the dispatcher stopped on an internal error")
            with self._cond:
                self._closing = True
                self._failure = ErrorInfo(ErrorCode.INTERNAL, f"engine failure: {exc}")
                leftovers = list(self._queue) + [r.entry for r in self._running.values()]
                leftovers += [f for fs in self._followers.values() for f in fs]
                self._queue.clear()
                self._running.clear()
                self._followers.clear()
                self._done.clear()
            for entry in leftovers:
                self._emit_error(entry.job, ImageStatus.FAILED, ErrorCode.INTERNAL, str(exc))
            with self._cond:
                self._outstanding = 0  # nothing will report any more: release join()
                self._cond.notify_all()
            self._pool.kill()
            self._pool.discard()

    def _next_wake(self) -> float:
        if not self._running:
            return _WAKE_INTERVAL_S
        soonest = min(r.deadline for r in self._running.values())
        return max(0.01, min(_WAKE_INTERVAL_S, soonest - time.monotonic()))

    def _sweep_cancelled(self) -> None:
        """Queued jobs of cancelled batches get their outcome now, not when they reach the head."""
        with self._cond:
            if not (self._cancelled_batches or self._cancel_all):
                return
            keep: deque[_Entry] = deque()
            doomed: list[_Entry] = []
            for entry in self._queue:
                (doomed if self._is_cancelled(entry.job) else keep).append(entry)
            self._queue = keep
            if doomed:
                self._cond.notify_all()
        for entry in doomed:
            self._emit_error(entry.job, ImageStatus.CANCELLED, ErrorCode.CANCELLED, "cancelled")

    def _is_cancelled(self, job: ImageJob) -> bool:
        return self._cancel_all or job.batch_id in self._cancelled_batches

    def _admit(self) -> None:
        """Start jobs while a worker is free and memory allows: the costliest first.

        Among the queued jobs (a bounded window), the one with the largest estimated decode
        cost starts first, so a big image met late does not leave one worker idle at the end
        of a run. A job that does not fit the memory budget is waited for, not overtaken,
        so a huge image cannot starve behind a stream of small ones.
        """
        while True:
            with self._cond:
                if not self._queue or self._drop_queued or len(self._running) >= self.workers:
                    return
                if any(r.entry.isolate for r in self._running.values()):
                    return
                head = self._queue[0]
                if head.isolate and self._running:
                    return
                window = [head] if head.isolate else [e for e in self._queue if not e.isolate]
            with self._admission:
                waiting = [e for e in window if e.cost is not None or self._first_look(e)]
                if not waiting:
                    continue
                entry = max(waiting, key=lambda e: e.cost or 0)
                if not self._start_or_settle(entry):
                    return

    def _first_look(self, entry: _Entry) -> bool:
        """Settle ``entry`` if it needs no worker (cancelled, copy, duplicate, bad header);
        else record its decode cost. True when it still needs a worker."""
        if self._missing_or_settle(entry) is None:
            return False
        job = entry.job
        try:
            entry.cost = probe(job.source, self.spec.limits, self._largest_box).decode_bytes
        except ImageError as exc:
            self._remove(entry)
            self._emit_error(job, ImageStatus.FAILED, exc.code, exc.message)
            return False
        return True

    def _missing_or_settle(self, entry: _Entry) -> frozenset[str] | None:
        """The renditions ``entry`` still needs, or None once it was settled without a
        worker (cancelled, a copy of bytes in flight, or rendered before)."""
        job = entry.job
        if self._is_cancelled(job):
            self._remove(entry)
            self._emit_error(job, ImageStatus.CANCELLED, ErrorCode.CANCELLED, "cancelled")
            return None
        if job.sha256 in self._by_sha:  # the same bytes are being rendered right now
            self._remove(entry)
            self._followers.setdefault(job.sha256, []).append(entry)
            return None
        missing = self.storage.missing_renditions(job.sha256, self.spec)
        if not missing:
            self._remove(entry)  # rendered before: no need to even read the header
            self._emit_duplicate(job)
            return None
        return missing

    def _start_or_settle(self, entry: _Entry) -> bool:
        """Start ``entry`` (checked again: things change while it waits); False if it must
        wait for memory."""
        missing = self._missing_or_settle(entry)
        if missing is None:
            return True
        cost = entry.cost or 0
        in_use = sum(r.entry.cost or 0 for r in self._running.values())
        if self._running and in_use + cost > self.memory_budget_bytes:
            return False
        self._remove(entry)
        only = None if len(missing) == len(self.spec.rendition_names()) else missing
        self._start(entry, only)
        return True

    def _remove(self, entry: _Entry) -> None:
        with self._cond:
            self._queue.remove(entry)
            self._cond.notify_all()

    def _start(self, entry: _Entry, only: frozenset[str] | None) -> None:
        job = entry.job
        marker = self._timeout_dir / uuid.uuid4().hex
        task = RenderTask(
            job_id=job.job_id,
            source=job.source,
            sha256=job.sha256,
            out_dir=str(self.storage.image_dir(job.sha256)),
            spec=self.spec,
            only=only,
            cancel_flags=(str(self._cancel_flag(job.batch_id)), str(self._cancel_flag("*"))),
            timeout_marker=str(marker),
        )
        try:
            future = self._pool.submit(self._task_function, task)
        except RuntimeError as exc:  # no worker process can be started at all
            self._settle(entry, ImageStatus.FAILED, None, ErrorInfo(ErrorCode.INTERNAL, str(exc)))
            return
        now = time.monotonic()
        timeout = self.spec.limits.timeout_s
        running = _Running(
            entry,
            future,
            self._pool.generation,
            now,
            # The worker's own watchdog fires at `timeout`; this is the backstop for a
            # worker too stuck to run its watchdog thread.
            deadline=now + timeout + max(5.0, timeout / 4),
            timeout_marker=marker,
        )
        self._running[future] = running
        self._by_sha[job.sha256] = running
        future.add_done_callback(self._on_future_done)
        if self._on_start is not None:
            self._call(self._on_start, job)

    def _on_future_done(self, future: Future[TaskResult]) -> None:
        with self._cond:
            self._done.append(future)
            self._events += 1
            self._cond.notify_all()

    def _collect(self) -> None:
        broken: list[_Running] = []
        while True:
            with self._cond:
                if not self._done:
                    break
                future = self._done.popleft()
            running = self._running.pop(future, None)
            if running is None:  # already settled by _recover, which waited for it
                continue
            if self._by_sha.get(running.entry.job.sha256) is running:
                del self._by_sha[running.entry.job.sha256]
            try:
                result = future.result()
            except (BrokenProcessPool, CancelledError):
                broken.append(running)
                continue
            except Exception as exc:  # e.g. a task that could not be pickled: a bug of ours
                log.exception("task for %s failed in the pool", running.entry.job.source)
                self._settle(
                    running.entry,
                    ImageStatus.FAILED,
                    None,
                    ErrorInfo(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"),
                )
                continue
            self._settle_result(running.entry, result)
        if broken:
            self._recover(broken)

    def _settle_result(self, entry: _Entry, result: TaskResult) -> None:
        if result.result is not None:
            self._settle(entry, ImageStatus.DONE, result.result, None)
            return
        code = result.error_code or ErrorCode.INTERNAL
        status = ImageStatus.CANCELLED if code is ErrorCode.CANCELLED else ImageStatus.FAILED
        self._settle(entry, status, None, ErrorInfo(code, result.error_message or code.value))

    def _recover(self, broken: list[_Running]) -> None:
        """A worker died: wait for the whole pool's fate, then decide per job."""
        generation = broken[0].pool_generation
        others = [r for r in self._running.values() if r.pool_generation == generation]
        with self._cond:
            for running in others:
                if running.future in self._done:
                    self._done.remove(running.future)
        victims = list(broken)
        for running in others:  # the rest of a broken pool fails within moments
            self._running.pop(running.future, None)
            if self._by_sha.get(running.entry.job.sha256) is running:
                del self._by_sha[running.entry.job.sha256]
            try:
                self._settle_result(running.entry, running.future.result(timeout=10))
            except Exception:
                victims.append(running)
        if generation == self._pool.generation:
            self._pool.discard()
        timed_out = [r for r in victims if r.killed_for_timeout or r.timeout_marker.exists()]
        suspects = [r for r in victims if r not in timed_out]
        for running in timed_out:
            limit = self.spec.limits.timeout_s
            self._cleanup_temp(running)
            self._settle(
                running.entry,
                ImageStatus.FAILED,
                None,
                ErrorInfo(ErrorCode.TIMEOUT, f"took longer than {limit:g} s"),
            )
        requeue: list[_Entry] = []
        for running in suspects:
            self._cleanup_temp(running)
            entry = running.entry
            if self._cancel_all:
                self._settle(
                    entry, ImageStatus.CANCELLED, None, ErrorInfo(ErrorCode.CANCELLED, "cancelled")
                )
                continue
            if not timed_out:  # nobody ran out of time, so one of these killed its worker
                entry.strikes += 1
                entry.isolate = True  # run alone next time, so a second death is conclusive
            if entry.strikes >= 2:
                self._settle(
                    entry,
                    ImageStatus.FAILED,
                    None,
                    ErrorInfo(
                        ErrorCode.WORKER_CRASHED, "the worker process died twice on this image"
                    ),
                )
            else:
                requeue.append(entry)
        with self._cond:
            for entry in reversed(requeue):
                self._queue.appendleft(entry)
                for follower in reversed(self._followers.pop(entry.job.sha256, [])):
                    self._queue.appendleft(follower)
            self._cond.notify_all()

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        late = [r for r in self._running.values() if r.deadline < now]
        if late:
            for running in late:
                running.killed_for_timeout = True
            self._pool.kill()

    def _settle(
        self,
        entry: _Entry,
        status: ImageStatus,
        result: RenderResult | None,
        error: ErrorInfo | None,
    ) -> None:
        """Report ``entry``'s outcome, then its followers' (same bytes, waiting on it)."""
        job = entry.job
        self._emit(ImageOutcome(job, status, result, error, time.monotonic() - entry.queued_at))
        followers = self._followers.pop(job.sha256, [])
        if status is ImageStatus.CANCELLED:
            with self._cond:  # the copy's own batch may still want it: run it after all
                self._queue.extendleft(reversed(followers))
                self._cond.notify_all()
            return
        for follower in followers:
            if status is ImageStatus.DONE:
                self._emit(
                    ImageOutcome(
                        follower.job,
                        ImageStatus.DUPLICATE,
                        result,
                        None,
                        time.monotonic() - follower.queued_at,
                    )
                )
            else:
                self._emit(
                    ImageOutcome(
                        follower.job, status, None, error, time.monotonic() - follower.queued_at
                    )
                )

    def _emit_duplicate(self, job: ImageJob) -> None:
        manifest = self.storage.read_manifest(job.sha256)
        result = render_result_from_manifest(manifest) if manifest else None
        self._emit(ImageOutcome(job, ImageStatus.DUPLICATE, result, None))

    def _emit_error(
        self, job: ImageJob, status: ImageStatus, code: ErrorCode, message: str
    ) -> None:
        self._emit(ImageOutcome(job, status, None, ErrorInfo(code, message)))

    def _emit(self, outcome: ImageOutcome) -> None:
        self._call(self._on_outcome, outcome)
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    @staticmethod
    def _call(callback: OutcomeCallback | StartCallback, arg: object) -> None:
        try:
            callback(arg)  # type: ignore[arg-type]
        except Exception:
            log.exception("an engine callback raised; the engine goes on")

    def _drop_remaining(self) -> None:
        """At shutdown: queued and waiting jobs are handed back unstarted."""
        leftovers = list(self._queue) + [f for fs in self._followers.values() for f in fs]
        self._queue.clear()
        self._followers.clear()
        self._dropped.extend(entry.job for entry in leftovers)
        self._outstanding -= len(leftovers)
        self._cond.notify_all()

    # ---- files --------------------------------------------------------------------

    def _cleanup_temp(self, running: _Running) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.storage.remove_temp_files(running.entry.job.sha256)

    def _cancel_flag(self, batch_id: str) -> Path:
        return self._cancel_dir / hashlib.sha1(batch_id.encode()).hexdigest()

    def _remove_run_dir(self) -> None:
        shutil.rmtree(self._run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._run_dir.parent.rmdir()  # only when no other engine uses it


def _remove_orphaned_run_dirs(base_dir: Path) -> None:
    """Remove run folders of engines whose process is gone (killed before its atexit ran)."""
    with contextlib.suppress(OSError):
        for folder in base_dir.glob("engine-*-*"):
            try:
                pid = int(folder.name.split("-")[1])
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
            except (ValueError, PermissionError):
                continue  # not ours to judge: a name we did not write, or another user's
