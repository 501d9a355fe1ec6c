"""``pixelmill worker``: the Celery task that renders one image, and the worker that runs it.

A message may be delivered more than once (a worker died, a visibility timeout ran out), so
every step is safe to repeat: a final image is left alone, a claim per content makes one
worker render a given sha256 at a time, a run count in the store turns the second death
into ``worker_crashed``, and the message is acknowledged only once the outcome is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery, Task
from celery.exceptions import Reject, SecurityWarning, SoftTimeLimitExceeded
from celery.signals import worker_ready
from celery.worker.request import Request

from pixelmill.config import Settings
from pixelmill.core.manifest import render_result_from_manifest
from pixelmill.core.specs import RenderSpec
from pixelmill.engine import task as render_task
from pixelmill.engine.base import ErrorInfo, ImageJob, ImageOutcome
from pixelmill.engine.celery_app import (
    TASK_NAME,
    drop_original,
    make_app,
    redact_url,
    spec_from_dict,
)
from pixelmill.engine.celery_claims import ClaimHeartbeat, claim_owner, take_claim
from pixelmill.engine.records import finish_fields
from pixelmill.errors import ErrorCode
from pixelmill.preflight import EXIT_WRONG_SETTINGS, broker_problem
from pixelmill.states import ImageStatus
from pixelmill.storage import Storage, StorageUnavailable, open_storage
from pixelmill.store import RedisBatchStore, open_store

log = logging.getLogger(__name__)

READY_LINE = "pixelmill worker ready"
CLAIM_RETRY_S = 0.5
CANCEL_CHECK_INTERVAL_S = 0.25
RUNS_ALLOWED = 2  # a third delivery means two runs died under this image
STORE_RETRY_BUDGET_S = 30.0
STORAGE_DOWN_BACKOFF_S = 2.0
ORIGINAL_GONE = "the uploaded original is gone from storage"

T = TypeVar("T")


class WorkerContext:
    """The store, storage and data dir of this process (one per process: no shared sockets)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.storage: Storage = open_storage(settings)
        store = open_store(
            settings.store, self.data_dir, settings.redis_prefix, settings.batch_ttl_s
        )
        if not isinstance(store, RedisBatchStore):
            raise TypeError("the celery engine needs a Redis store")
        self.store = store
        self.pid = os.getpid()

    def work_path(self, image_id: str) -> Path:
        return self.data_dir / "work" / image_id


_settings: Settings | None = None
_context: WorkerContext | None = None


def context() -> WorkerContext:
    """This process's context, built on first use (after the pool forked)."""
    global _context
    if _context is None or _context.pid != os.getpid():
        if _settings is None:
            raise RuntimeError("the worker's settings are not set (run_worker sets them)")
        _context = WorkerContext(_settings)
    return _context


def with_store_retry(what: str, call: Callable[[], T]) -> T:
    """``call`` retried with backoff for a bounded time; then the message goes back to the
    queue (never acknowledged without its outcome written)."""
    deadline = time.monotonic() + STORE_RETRY_BUDGET_S
    delay = 0.1
    while True:
        try:
            return call()
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                log.error("store unavailable for %s, giving the message back: %s", what, exc)
                raise Reject(f"store unavailable: {exc}", requeue=True) from exc
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def finish(ctx: WorkerContext, outcome: ImageOutcome, requested: list[str] | None = None) -> None:
    """Write the outcome (applied once), then drop this image's hold on its original.

    ``requested``: the renditions the image's request chose (its record lists those).
    """
    job = outcome.job
    fields = finish_fields(outcome, requested)
    with_store_retry(
        f"image {job.job_id}",
        lambda: ctx.store.finish_image(job.batch_id, job.job_id, **fields),
    )
    release_original(ctx, job.sha256, job.job_id)


def release_original(ctx: WorkerContext, sha256: str, image_id: str) -> None:
    """The image is final: the last image needing ``originals/<sha256>`` removes it."""
    try:
        drop_original(ctx.store, ctx.storage, sha256, image_id)
    except Exception as exc:  # a leftover original costs space, not correctness
        log.warning("could not release the original of image %s: %s", image_id, exc)


def cancel_check(ctx: WorkerContext, batch_id: str) -> Callable[[], bool]:
    """ "Is the batch cancelled?" read from the store at most every 0.25 s."""
    last = [0.0, False]

    def check() -> bool:
        now = time.monotonic()
        if now - float(last[0]) >= CANCEL_CHECK_INTERVAL_S:
            last[0] = now
            with contextlib.suppress(Exception):
                last[1] = ctx.store.is_batch_cancelled(batch_id)
        return bool(last[1])

    return check


def render_image(
    task: Task[Any, Any], batch_id: str, image_id: str, sha256: str, spec: dict[str, Any]
) -> None:
    """The task: see the module docstring for why each step is safe to repeat."""
    ctx = with_store_retry("setting up", context)
    job = ImageJob(image_id, str(ctx.work_path(image_id)), sha256, batch_id)
    image = with_store_retry("reading", lambda: ctx.store.get_image(batch_id, image_id))
    if image is None or image.status.is_final:  # expired, or a redelivery of a finished one
        release_original(ctx, sha256, image_id)
        return
    if with_store_retry("reading", lambda: ctx.store.is_batch_cancelled(batch_id)):
        finish(ctx, ImageOutcome(job, ImageStatus.CANCELLED))
        return
    # One owner per delivery: a duplicate message of this very image (a redelivery while
    # the first still renders) must wait like any other image of these bytes.
    owner = claim_owner(image_id)
    if not with_store_retry("claim", lambda: take_claim(ctx.store, sha256, owner)):
        # Another worker renders these bytes: free this slot, look again shortly.
        # No retry limit (the task is registered with max_retries=None): a long render of
        # these bytes legitimately keeps this image waiting.
        raise task.retry(countdown=CLAIM_RETRY_S)
    spec_obj = spec_from_dict(spec)
    with ClaimHeartbeat(ctx.store, sha256, owner):
        ran_before = image.status is ImageStatus.PROCESSING
        try:
            outcome = _render_claimed(ctx, job, spec_obj, ran_before)
        except SoftTimeLimitExceeded:  # struck outside the render itself
            outcome = _timed_out(job, spec_obj)
        except StorageUnavailable as exc:
            # Not this image's fault and nothing was counted: the message goes back.
            log.warning("storage unavailable for image %s, giving the message back: %s",
                        image_id, exc)  # fmt: skip
            time.sleep(STORAGE_DOWN_BACKOFF_S)
            raise Reject(f"storage unavailable: {exc}", requeue=True) from exc
    finish(ctx, outcome, spec_obj.rendition_names())


def _render_claimed(
    ctx: WorkerContext, job: ImageJob, spec: RenderSpec, ran_before: bool
) -> ImageOutcome:
    """Render the claimed content, or point at what is there. ``ran_before``: an earlier
    delivery of this very image got as far as rendering (its outcome was not written)."""
    manifest = ctx.storage.read_manifest(job.sha256)
    missing = ctx.storage.missing_renditions(job.sha256, spec)
    if not missing and manifest is not None:
        # Rendered by an earlier run of this image whose outcome never reached the store:
        # still its own render (done), not a copy of another image's.
        status = ImageStatus.DONE if ran_before else ImageStatus.DUPLICATE
        return ImageOutcome(job, status, render_result_from_manifest(manifest))
    local = Path(job.source)
    # Before the run is counted: a storage outage gives the message back, it is no crash.
    if not ctx.storage.fetch_original(job.sha256, local):
        return _failed(job, ErrorCode.INTERNAL, ORIGINAL_GONE)
    runs = with_store_retry("attempt", lambda: ctx.store.start_attempt(job.batch_id, job.job_id))
    if runs > RUNS_ALLOWED:
        with contextlib.suppress(OSError):
            local.unlink()
        message = f"the worker process died on this image {runs - 1} times"
        return _failed(job, ErrorCode.WORKER_CRASHED, message)
    with_store_retry("progress", lambda: ctx.store.mark_processing(job.batch_id, job.job_id))
    started = time.monotonic()
    try:
        only = None if len(missing) == len(spec.rendition_names()) else missing
        request = render_task.RenderTask(
            job.job_id, job.source, job.sha256, ctx.storage, spec, only
        )
        render_task.set_cancel_check(cancel_check(ctx, job.batch_id))
        try:
            result = render_task.run_render_task(request)
        finally:
            render_task.set_cancel_check(None)
    except SoftTimeLimitExceeded:  # run_render_task lets it through, cleaned up
        with contextlib.suppress(Exception):
            ctx.storage.discard_unlisted(job.sha256, spec.rendition_names())
        return _timed_out(job, spec)
    finally:
        with contextlib.suppress(OSError):
            local.unlink()
    elapsed = time.monotonic() - started
    if result.error_code is None and result.result is not None:
        return ImageOutcome(job, ImageStatus.DONE, result.result, elapsed_s=elapsed)
    if result.error_code is ErrorCode.CANCELLED:
        return ImageOutcome(job, ImageStatus.CANCELLED, elapsed_s=elapsed)
    code = result.error_code or ErrorCode.INTERNAL
    return _failed(job, code, result.error_message or "rendering failed")


def _failed(job: ImageJob, code: ErrorCode, message: str) -> ImageOutcome:
    return ImageOutcome(job, ImageStatus.FAILED, None, ErrorInfo(code, message))


def _timed_out(job: ImageJob, spec: RenderSpec) -> ImageOutcome:
    return _failed(job, ErrorCode.TIMEOUT, f"took longer than {spec.limits.timeout_s:g} s")


class RenderRequest(Request):
    """Runs in the worker's main process: a hard time limit killed the pool process (hung C
    code), so the image's outcome is written here, where something is still alive."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        try:
            batch_id, image_id, sha256, spec = self.args
            ctx = context()
            job = ImageJob(image_id, str(ctx.work_path(image_id)), sha256, batch_id)
            spec_obj = spec_from_dict(spec)
            ctx.storage.discard_unlisted(sha256, spec_obj.rendition_names())
            finish(ctx, _timed_out(job, spec_obj))
            # The killed process's claim: taken over by the next image of these bytes here
            # (its process is gone), or it expires.
            with contextlib.suppress(OSError):
                ctx.work_path(image_id).unlink()
        except BaseException as exc:  # never take the worker's main process down
            log.error("could not record the timeout of task %s: %s", self.id, exc)


def register(app: Celery) -> Task[Any, Any]:
    """Register the render task on ``app`` (the worker side)."""
    # max_retries=None on the task: unbounded claim waits. Passed to retry() instead, None
    # would mean "the task's default" (3), and a copy waiting on a long render would be lost.
    return app.task(
        name=TASK_NAME, bind=True, Request=RenderRequest, acks_late=True, max_retries=None
    )(render_image)


class _RejectWithoutTraceback(logging.Filter):
    """A message given back (store or storage down) is one warning line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], Reject):
            record.exc_info = None
            record.exc_text = None
        return True


def _say_ready(**_: Any) -> None:
    print(READY_LINE, file=sys.stderr, flush=True)


def broker_refusal(app: Celery) -> str | None:
    """Why the broker refuses this worker (credentials, vhost), or None: it answers, or it
    is not up yet (then Celery keeps trying, as a worker started before its broker should)."""
    problem = broker_problem(app)
    return problem[1] if problem is not None and problem[0] == EXIT_WRONG_SETTINGS else None


def run_worker(settings: Settings, concurrency: int) -> int:
    """Run a worker until SIGTERM (warm shutdown: running images finish); the exit code."""
    global _settings, _context
    _settings, _context = settings, None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Containers often run as root; Celery's warning about it is noise at every start.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    app = make_app(settings)
    register(app)
    # The soft time limit must reach the task (the image ends ``timeout``), not be logged as
    # an internal error by the render's catch-all. Set before the pool forks.
    render_task.set_passthrough(SoftTimeLimitExceeded)
    refusal = broker_refusal(app)
    if refusal is not None:  # one line and exit 2, not Celery's traceback and exit 1
        url = redact_url(settings.broker_url)
        print(f"error: the broker {url} refuses this worker: {refusal}", file=sys.stderr)
        return 2
    worker_ready.connect(_say_ready, weak=False)
    logging.getLogger("celery.app.trace").addFilter(_RejectWithoutTraceback())
    storage = open_storage(settings)
    print(
        f"pixelmill worker: broker={redact_url(settings.broker_url)} "
        f"store={redact_url(settings.store)} storage={storage.describe()} "
        f"queue={settings.celery_queue} concurrency={concurrency}",
        file=sys.stderr,
        flush=True,
    )
    worker = app.Worker(
        concurrency=concurrency,
        pool="prefork",
        queues=[settings.celery_queue],
        hostname=f"pixelmill-{uuid.uuid4().hex[:8]}@{socket.gethostname()}",
        loglevel="WARNING",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()
    return int(getattr(worker, "exitcode", 0) or 0)
