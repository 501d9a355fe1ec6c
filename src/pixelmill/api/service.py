"""The batch service: uploads become store records and engine jobs; outcomes become transitions.

One engine serves every batch, so de-duplication by SHA-256 is race-free across batches.
Engine callbacks run on the engine's dispatcher thread; they only touch the (thread-safe,
synchronous) store and the file system, and hand webhooks to their own threads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pixelmill.api.celery_mode import celery_parts
from pixelmill.api.health_report import health_report
from pixelmill.api.metrics import Metrics
from pixelmill.api.resume import Resumer, sweep_spool
from pixelmill.api.signing import signed_urls, url_signer
from pixelmill.api.storage_probe import StorageProbe
from pixelmill.api.store_writes import StoreWriteRetrier
from pixelmill.api.uploads import UploadForm
from pixelmill.api.webhooks import MAX_IMAGES_IN_CALLBACK, WebhookSender, callback_body
from pixelmill.config import Settings
from pixelmill.engine.base import Choice, Engine, ImageJob, ImageOutcome
from pixelmill.engine.choices import ChosenSpecs
from pixelmill.engine.local import LocalEngine
from pixelmill.engine.records import finish_fields
from pixelmill.errors import NotFound
from pixelmill.states import ImageStatus
from pixelmill.storage import open_storage
from pixelmill.store import BatchRecord, BatchStore, ImageRecord, NewImage, open_store

log = logging.getLogger(__name__)

# How long a callback waits for an unreachable store before leaving it to the next start.
CALLBACK_STORE_WAIT_S = 30.0
# At a graceful stop: how long outcomes still waiting for the store get to be written.
STOP_FLUSH_S = 5.0


def new_id() -> str:
    """A batch or image id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


class BatchService:
    """Wires the store, the spool, the engine, metrics and webhooks together."""

    def __init__(self, settings: Settings, *, webhook_backoff_s: float = 1.0) -> None:
        self.settings = settings
        # Absolute, so spool paths in the store still hold when started from another folder.
        self.data_dir = Path(settings.data_dir).resolve()
        self.spool_root = self.data_dir / "spool"
        # One empty file per callback still owed: a restart sends what a crash left unsent.
        self.outbox = self.data_dir / "callbacks"
        self.storage = open_storage(settings)
        self.storage_probe = StorageProbe(self.storage)
        self.spec = settings.render_spec()
        self.signer = url_signer(settings)
        self.chosen = ChosenSpecs(self.spec)  # each request's choice of the catalogue
        self.store: BatchStore = open_store(
            settings.store, self.data_dir, settings.redis_prefix, settings.batch_ttl_s
        )
        # Celery: workers elsewhere finish images; the store keeps counts and owed callbacks.
        self.celery = celery_parts(
            settings, self.spec, self.store, self.storage, self._send_callback
        )
        self.owed = None if self.celery is None else self.celery.owed
        self.metrics = Metrics() if self.celery is None else self.celery.metrics
        # Outcomes the store did not take yet (down, full disk): retried, never dropped.
        self.writes = StoreWriteRetrier()
        # Set between start() and stop(): callbacks read the store only while it is open.
        self._running = threading.Event()
        self.webhooks = WebhookSender(
            settings.webhook_secret,
            settings.webhook_attempts,
            backoff_s=webhook_backoff_s,
            allow_private=settings.webhook_allow_private,
        )
        self.engine: Engine
        if self.celery is not None:
            self.engine = self.celery.engine
        else:
            self.engine = LocalEngine(
                self.spec,
                self.storage,
                workers=settings.workers,
                memory_budget_bytes=settings.memory_budget_mb * 1024 * 1024,
                max_tasks_per_child=settings.max_tasks_per_child,
                work_dir=self.data_dir / "tmp",
                on_outcome=self._on_outcome,
                on_start=self._on_start,
            )
        self.metrics.watch_engine(lambda: self.engine.queued, lambda: self.engine.in_flight)
        # engine.submit blocks while the engine's queue is full; a feeder thread absorbs that,
        # so a request with hundreds of files is answered as soon as its body is read.
        self._feed: queue.Queue[ImageJob | None] = queue.Queue()
        self._feeder = threading.Thread(target=self._feed_engine, name="pixelmill-feeder")
        self._feeder.daemon = True
        self.resumer = Resumer(self)

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine and resume every unfinished image from the spool."""
        self.spool_root.mkdir(parents=True, exist_ok=True)
        self.storage.check()  # a missing bucket or refused credentials: one line, now
        if self.celery is None:
            # With the celery engine, workers elsewhere write this storage: a temp file may
            # be one a worker is writing right now, not one a crash left behind.
            self.storage.sweep_temp_files()
        # Through uvicorn's logger: `serve` shows it ("INFO:     renditions in s3://...").
        logging.getLogger("uvicorn.error").info("renditions in %s", self.storage.describe())
        self._running.set()
        self.storage_probe.start()
        self.writes.start()
        self.engine.start()
        self._feeder.start()
        if self.celery is None:
            self.resume()
        else:
            kept = self.celery.start(self.store, self.spool_root, self.resumer.resume_job)
            sweep_spool(self.spool_root, kept)

    def stop(self) -> None:
        """Drain: running images finish, unstarted ones stay pending for the next start."""
        self._feed.put(None)
        unstarted = self.engine.shutdown(cancel_pending=False)
        self._feeder.join(10)
        if unstarted:
            log.info("%d image(s) left pending for the next start", len(unstarted))
        unwritten = self.writes.flush(STOP_FLUSH_S)
        self.writes.stop()
        if unwritten:
            # Their spool files stay and the store still has them unfinished: resumed later.
            log.warning("%d outcome(s) not written (store unavailable): resumed at next start",
                        unwritten)  # fmt: skip
        self._running.clear()  # callbacks not yet built keep their marker for the next start
        if self.celery is not None:
            self.celery.owed.stop()
        self.webhooks.close()
        self.storage_probe.stop()
        self.store.close()

    def healthy(self) -> dict[str, Any]:
        """What /healthz reports (see health_report)."""
        return health_report(self)

    def feeder_alive(self) -> bool:
        return self._feeder.is_alive()

    def backlog(self) -> int:
        """Images received and not yet handed to the engine."""
        return self._feed.qsize()

    def resume(self) -> None:
        """Queue again what a previous run left unfinished (see ``Resumer``)."""
        self.resumer.resume()

    def feed(self, job: ImageJob) -> None:
        """Hand ``job`` to the engine (through the feeder: the caller never blocks)."""
        self._feed.put(job)

    # -- requests -------------------------------------------------------------------------

    def spool_dir(self, batch_id: str) -> Path:
        return self.spool_root / batch_id

    def create_batch(
        self,
        batch_id: str,
        form: UploadForm,
        callback_url: str | None,
        choice: Choice = (None, None),
    ) -> BatchRecord:
        """Record the batch (failed uploads count as failed images) and queue its images.

        ``choice``: the request's presets and formats (checked against the catalogue).
        """
        presets, formats = choice
        images = [
            NewImage(
                image_id=f.image_id,
                filename=f.filename,
                sha256=f.sha256,
                spool_path=None if f.path is None else str(f.path),
                declared_type=f.declared_type,
                detected_type=f.detected_type,
                error=f.error,
            )
            for f in form.files
        ]
        try:
            record = self.store.create_batch(
                batch_id, images, callback_url, presets=presets, formats=formats
            )
        except BaseException:
            form.discard()
            raise
        self.metrics.batches.inc()
        with contextlib.suppress(OSError):
            self.spool_dir(batch_id).rmdir()  # succeeds only when every upload failed
        for f in form.files:
            self.metrics.bytes_in.inc(f.size if f.error is None else 0)
            if f.error is None and f.path is not None and f.sha256 is not None:
                job = ImageJob(f.image_id, str(f.path), f.sha256, batch_id, presets, formats)
                self._feed.put(job)
            elif f.error is not None:
                self.metrics.images.labels(status=ImageStatus.FAILED.value).inc()
        if record.is_finished:  # every upload failed: the batch is over already
            self._schedule_webhook(batch_id)
        return record

    def get_batch(self, batch_id: str, include_images: bool = True) -> BatchRecord:
        record = self.store.get_batch(batch_id, include_images=include_images)
        if record is None:
            raise NotFound(f"no batch {batch_id!r}")
        return record

    def cancel_batch(self, batch_id: str, *, send_callback: bool = True) -> BatchRecord:
        """Cancel (idempotent): no image of the batch starts after this returns.

        The engine first: once its cancel returns, every image it started is ``processing``
        in the store (admission marks them under the same lock), so the store's cancel drops
        only images that never started. The engine's callbacks for the images it sweeps may
        land first: the store ends a batch with a cancelled image ``cancelled`` all the same.
        """
        self.get_batch(batch_id, include_images=False)
        self.engine.cancel_batch(batch_id)
        _, transition = self.store.cancel_batch(batch_id)
        if transition.cancelled_images:
            self.metrics.images.labels(status=ImageStatus.CANCELLED.value).inc(
                transition.cancelled_images
            )
        if transition.batch_finished and send_callback:
            self._schedule_webhook(batch_id)
        record = self.get_batch(batch_id)
        if self.celery is not None:
            self.celery.engine.release_cancelled(
                [
                    (i.image_id, i.sha256)
                    for i in record.images
                    if i.status is ImageStatus.CANCELLED and i.sha256
                ]
            )
        return record

    def wait_for_image(self, batch_id: str, image_id: str, timeout_s: float) -> ImageRecord:
        """The image once final, or as it is when ``timeout_s`` runs out."""
        deadline = time.monotonic() + timeout_s
        version = 0
        while True:
            image = self.store.get_image(batch_id, image_id)
            if image is None:
                raise NotFound(f"no image {image_id!r} in batch {batch_id!r}")
            remaining = deadline - time.monotonic()
            if image.status.is_final or remaining <= 0:
                return image
            version = self.store.wait_for_change(batch_id, version, min(remaining, 1.0))

    # -- engine callbacks (dispatcher thread) ---------------------------------------------

    def _feed_engine(self) -> None:
        while True:
            job = self._feed.get()
            if job is None:
                return
            try:
                self.engine.submit(job)
            except RuntimeError:  # shutting down: the image stays pending for the next start
                return

    def _on_start(self, job: ImageJob) -> None:
        try:
            self.store.mark_processing(job.batch_id, job.job_id)
        except Exception as exc:  # cosmetic: finish_image takes a pending image as well
            log.warning("could not mark image %s processing: %s", job.job_id, exc)

    def _on_outcome(self, outcome: ImageOutcome) -> None:
        """Write the outcome now, or keep it and retry until the store takes it."""
        self.writes.submit(
            f"image {outcome.job.job_id} {outcome.status.value}",
            lambda: self._write_outcome(outcome),
        )

    def _write_outcome(self, outcome: ImageOutcome) -> None:
        job, result = outcome.job, outcome.result
        try:
            requested: list[str] | None = self.chosen.of(job).rendition_names()
        except ValueError:
            requested = None
        fields = finish_fields(outcome, requested)
        transition = self.store.finish_image(job.batch_id, job.job_id, **fields)
        # The store has it: what follows must not raise, or the retry would skip it.
        if transition.applied:
            self.metrics.observe_outcome(outcome.status, result, outcome.elapsed_s)
        if transition.batch_finished:
            self._schedule_webhook(job.batch_id)
        # Only once the store has the outcome: a crash before this line resumes the image.
        self._remove_spool_file(Path(job.source))

    def _remove_spool_file(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the batch's spool folder, once its last file is gone

    # -- webhooks -------------------------------------------------------------------------

    def _schedule_webhook(self, batch_id: str) -> None:
        """The batch just finished: record the callback as owed, then send it.

        The marker is written here, on the thread of the transition, before anything is
        queued: a crash or a stop at any later point leaves it for the next start. With the
        celery engine the store recorded it as owed in the transition: the watcher sends it.
        """
        if self.owed is not None:
            self.owed.wake()
            return
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            (self.outbox / batch_id).touch()
        except OSError as exc:
            log.warning("could not record the callback of batch %s as owed: %s", batch_id, exc)
        self._send_callback(batch_id)

    def _send_callback(self, batch_id: str) -> None:
        keep_marker = threading.Event()  # set when the callback could not even be built
        try:
            future = self.webhooks.schedule(lambda: self._callback_for(batch_id, keep_marker))
        except RuntimeError:  # the sender is closed: the marker stays for the next start
            if self.owed is not None:
                self.owed.done(batch_id, settled=False)
            return
        future.add_done_callback(lambda done: self._callback_settled(batch_id, done, keep_marker))

    def _callback_settled(
        self, batch_id: str, future: Future[bool], keep_marker: threading.Event
    ) -> None:
        """Delivered, or given up after every attempt: no longer owed. Cut short by a
        shutdown, or not built for want of a store: still owed, the next start sends it."""
        settled = not (future.cancelled() or keep_marker.is_set())
        if settled:
            delivered = future.exception() is None and future.result()
            settled = delivered or not self.webhooks.stopping
        if self.owed is not None:
            self.owed.done(batch_id, settled)
        elif settled:
            with contextlib.suppress(OSError):
                (self.outbox / batch_id).unlink()

    def _callback_for(
        self, batch_id: str, keep_marker: threading.Event
    ) -> tuple[str, bytes] | None:
        """``(url, body)`` of the batch's callback; None when it has no callback_url."""
        deadline = time.monotonic() + CALLBACK_STORE_WAIT_S
        delay = 0.1
        while True:
            if not self._running.is_set():  # stopping: the store may be closed already
                keep_marker.set()
                return None
            try:
                record = self.store.get_batch(batch_id, include_images=False)
                if record is None or not record.callback_url:
                    return None
                url = record.callback_url
                if record.total <= MAX_IMAGES_IN_CALLBACK:
                    record = self.store.get_batch(batch_id) or record
                # Its rendition URLs are signed like any answer's: the receiver needs no key.
                return url, callback_body(signed_urls(self.signer, record.as_api_dict()))
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    log.warning("callback of batch %s left for the next start: %s", batch_id, exc)
                    keep_marker.set()
                    return None
                time.sleep(delay)
                delay = min(2.0, delay * 2)
