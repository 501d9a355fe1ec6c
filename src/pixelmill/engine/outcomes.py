"""Outcomes: worker events become exactly one outcome per job, and copies share their leader's.

Mixed into ``LocalEngine`` (it uses the engine's state, all on the dispatcher thread but
``_cond``-guarded parts). A result settles its job; a worker's death is judged for the job
that worker held alone (``recovery``): a retry, a timeout, a cancel or ``worker_crashed``.
Whatever an unfinished run wrote is removed, so an image folder holds only what its
manifest lists.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from pixelmill.core.manifest import render_result_from_manifest
from pixelmill.core.specs import RenderResult, RenderSpec
from pixelmill.engine.admission import AdmissionQueue, Entry
from pixelmill.engine.base import ErrorInfo, ImageJob, ImageOutcome, OutcomeCallback, StartCallback
from pixelmill.engine.cancel import CancelRegistry
from pixelmill.engine.choices import ChosenSpecs
from pixelmill.engine.dedupe import InFlight
from pixelmill.engine.pool import Worker, WorkerPool
from pixelmill.engine.recovery import Running, judge_death
from pixelmill.engine.task import TaskResult
from pixelmill.errors import ErrorCode
from pixelmill.states import ImageStatus
from pixelmill.storage import Storage, StorageUnavailable

log = logging.getLogger(__name__)

CANCELLED = ErrorInfo(ErrorCode.CANCELLED, "cancelled")
# A worker event: its result (a TaskResult), or its exit (the exit status).
WorkerEvent = tuple[Worker, TaskResult | None, int | None]


class Outcomes:
    """The outcome half of ``LocalEngine``."""

    spec: RenderSpec
    _chosen: ChosenSpecs
    storage: Storage
    _on_outcome: OutcomeCallback
    _cond: threading.Condition
    _queue: AdmissionQueue
    _events: deque[WorkerEvent]
    _cancels: CancelRegistry
    _outstanding: int
    _dropped: list[ImageJob]
    _running: dict[Worker, Running]
    _in_flight: InFlight[Running]
    _pool: WorkerPool
    _closing: bool
    _failure: ErrorInfo | None

    def _fail_everything(self, exc: Exception) -> None:
        """The last resort after a bug in the dispatcher: every job held fails ``internal``."""
        with self._cond:
            self._closing = True
            self._failure = ErrorInfo(ErrorCode.INTERNAL, f"engine failure: {exc}")
            leftovers = self._queue.clear() + [r.entry for r in self._running.values()]
            leftovers += self._in_flight.take_all_followers()
            self._running.clear()
        self._pool.kill_all()
        for entry in leftovers:
            self._emit(ImageOutcome(entry.job, ImageStatus.FAILED, None, self._failure))
        with self._cond:
            self._outstanding = 0  # nothing will report any more: release join()
            self._cond.notify_all()

    def _collect(self) -> None:
        """Turn worker events into outcomes: a result, or a death judged for its job alone."""
        while True:
            with self._cond:
                if not self._events:
                    return
                worker, result, exitcode = self._events.popleft()
            if result is not None:
                self._pool.task_done(worker)
            else:
                self._pool.forget(worker)
            running = self._running.get(worker)
            if running is None or (result is not None and result.job_id != running.task.job_id):
                continue  # an idle worker exited (recycled), or a result nobody waits for
            del self._running[worker]
            self._in_flight.release(running.entry.job.sha256, running)
            if result is not None:
                self._finish(running, result)
            else:
                self._recover(running, exitcode)

    def _finish(self, running: Running, result: TaskResult) -> None:
        if result.result is not None:
            self._settle(running.entry, ImageStatus.DONE, result.result, None)
            return
        code = result.error_code or ErrorCode.INTERNAL
        status = ImageStatus.CANCELLED if code is ErrorCode.CANCELLED else ImageStatus.FAILED
        self._discard_partial(running)
        self._settle(running.entry, status, None, ErrorInfo(code, result.error_message or code))

    def _recover(self, running: Running, exitcode: int | None) -> None:
        """The worker died holding ``running``: clean up after it, then retry or report."""
        self._discard_partial(running)
        entry = running.entry
        verdict = judge_death(
            running,
            exitcode,
            cancelled=self._cancels.is_cancelled(entry.job.batch_id),
            timeout_s=self.spec.limits.timeout_s,
        )
        if not verdict.retry:
            self._settle(entry, verdict.status, None, verdict.error)
            return
        log.warning("a worker died rendering %s; it runs once more", entry.job.source)
        with self._cond:
            for follower in reversed(self._in_flight.followers_of(entry.job.sha256)):
                self._queue.push_front(follower)
            self._queue.push_front(entry)
            self._cond.notify_all()

    def _discard_partial(self, running: Running) -> None:
        """What an unfinished run wrote goes (a killed worker could not clean up itself)."""
        try:
            self.storage.discard_unlisted(running.task.sha256, running.task.targets())
        except StorageUnavailable as exc:  # the store is down: one line; nothing unlisted is served
            log.warning("cannot clean up after %s: %s", running.entry.job.source, exc.message)
        except Exception:
            log.exception("cannot clean up after %s", running.entry.job.source)

    def _settle(
        self,
        entry: Entry,
        status: ImageStatus,
        result: RenderResult | None,
        error: ErrorInfo | None,
    ) -> None:
        """Report ``entry``'s outcome, then its followers' (same bytes, waiting on it)."""
        if status is ImageStatus.CANCELLED and error is None:
            error = CANCELLED
        job = entry.job
        self._emit(ImageOutcome(job, status, result, error, time.monotonic() - entry.queued_at))
        if self._in_flight.is_rendering(job.sha256):
            return  # not the leader: the copies wait for the render in flight, not for this
        followers = self._in_flight.followers_of(job.sha256)
        if status is ImageStatus.DONE and result is not None:
            # A copy that chose renditions this render did not make renders them itself.
            made = {r.filename for r in result.renditions}
            needing = [f for f in followers if not self._covered(f.job, made)]
            followers = [f for f in followers if f not in needing]
            self._requeue(needing)
        if status is ImageStatus.CANCELLED:
            self._requeue(followers)  # the copy's own batch may still want it: run it after all
            return
        for follower in followers:
            elapsed = time.monotonic() - follower.queued_at
            if status is ImageStatus.DONE:
                outcome = ImageOutcome(follower.job, ImageStatus.DUPLICATE, result, None, elapsed)
            else:
                outcome = ImageOutcome(follower.job, status, None, error, elapsed)
            self._emit(outcome)

    def _covered(self, job: ImageJob, made: set[str]) -> bool:
        """True when every rendition ``job`` asked for is in ``made``."""
        try:
            return set(self._chosen.of(job).rendition_names()) <= made
        except ValueError:
            return False  # requeued: its first look fails it with the reason

    def _requeue(self, entries: list[Entry]) -> None:
        """Back to the head of their batches, to be looked at again."""
        if not entries:
            return
        with self._cond:
            for entry in reversed(entries):
                self._queue.push_front(entry)
            self._cond.notify_all()

    def _emit_duplicate(self, entry: Entry) -> None:
        """``entry``'s content is rendered already: a duplicate, unless this very job rendered
        it (its worker died after writing the manifest, before sending the result)."""
        manifest = self.storage.read_manifest(entry.job.sha256)
        result = render_result_from_manifest(manifest) if manifest else None
        status = ImageStatus.DONE if entry.strikes and result else ImageStatus.DUPLICATE
        elapsed = time.monotonic() - entry.queued_at
        self._emit(ImageOutcome(entry.job, status, result, None, elapsed))

    def _emit(self, outcome: ImageOutcome) -> None:
        self._call(self._on_outcome, outcome)
        with self._cond:
            self._outstanding -= 1
            self._cancels.job_reported(outcome.job.batch_id)
            self._cond.notify_all()

    @staticmethod
    def _call(callback: OutcomeCallback | StartCallback, arg: object) -> None:
        try:
            callback(arg)  # type: ignore[arg-type]
        except Exception:
            log.exception("an engine callback raised; the engine goes on")

    def _drop_remaining(self) -> None:
        """At shutdown: queued and waiting jobs are handed back unstarted (``_cond`` held)."""
        leftovers = self._queue.clear() + self._in_flight.take_all_followers()
        self._dropped.extend(entry.job for entry in leftovers)
        self._outstanding -= len(leftovers)
        for entry in leftovers:
            self._cancels.job_reported(entry.job.batch_id)
        self._cond.notify_all()
