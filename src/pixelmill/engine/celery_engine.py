"""The service side of the celery engine: originals to storage, one task message per image.

Rendering, outcomes and progress happen in ``pixelmill worker`` processes, which write
straight to the shared store; this side only enqueues, and reports what the broker knows
(is it reachable, how many messages wait, how many workers answer).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

from pixelmill.config import Settings
from pixelmill.core.specs import RenderSpec
from pixelmill.engine.base import Choice, ImageJob
from pixelmill.engine.celery_app import (
    TASK_NAME,
    drop_original,
    make_app,
    redact_url,
    spec_to_dict,
)
from pixelmill.engine.choices import ChosenSpecs
from pixelmill.storage import Storage
from pixelmill.store.base import WorkCoordination

log = logging.getLogger(__name__)

BROKER_CHECK_TIMEOUT_S = 2
# The broker is asked in the background, never on a request's path: /healthz and /metrics
# answer at once even when the broker hangs. An answer older than this is no answer.
PROBE_INTERVAL_S = 1.0
WORKERS_EVERY_S = 5.0
ANSWER_STALE_S = 10.0
FIRST_ANSWER_WAIT_S = 2.0
PING_TIMEOUT_S = 0.5
# The longest an upload waits for an earlier image's delete of the same original (the lock's
# expiry frees it sooner if that deleter died).
ORIGINAL_DELETE_WAIT_S = 60.0


class CeleryEngine:
    """Enqueues image jobs for ``pixelmill worker`` processes (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        spec: RenderSpec,
        store: WorkCoordination,
        storage: Storage,
    ) -> None:
        self.settings = settings
        self._chosen = ChosenSpecs(spec)
        # The spec each message carries, per choice of the catalogue (few distinct ones).
        self._messages: dict[Choice, dict[str, Any]] = {}
        self.store = store
        self.storage = storage
        self.app: Celery = make_app(settings)
        self._closing = threading.Event()
        self._answered_at = -1e9  # monotonic time of the broker's last answer
        self._depth = -1
        self._workers: int | None = None
        self._first_answer = threading.Event()
        self._started_at = time.monotonic()
        self._probe = threading.Thread(target=self._probe_loop, name="pixelmill-broker-probe")
        self._probe.daemon = True
        self._unsent = 0  # images taken by submit and not yet handed to the broker
        self.enqueue_error: str | None = None

    def start(self) -> CeleryEngine:
        # Through uvicorn's logger, as the service's "renditions in ..." line: `serve` shows it.
        logging.getLogger("uvicorn.error").info(
            "celery engine: broker %s, queue %s",
            redact_url(self.settings.broker_url),
            self.settings.celery_queue,
        )
        self._started_at = time.monotonic()
        self._probe.start()
        return self

    def submit(self, job: ImageJob) -> None:
        """Hold and store the original, send the task, then drop the spool file.

        Retried while the broker or storage is down (the feeder waits, as on a full queue);
        a stop leaves the spool file, so the next start sends it again.
        """
        delay = 0.2
        self._unsent = 1
        try:
            while True:
                if self._closing.is_set():
                    raise RuntimeError("the engine is shutting down")
                try:
                    self._enqueue(job)
                    break
                except Exception as exc:
                    self.enqueue_error = f"{type(exc).__name__}: {exc}"
                    log.warning("could not enqueue image %s (retrying): %s", job.job_id, exc)
                    self._closing.wait(delay)
                    delay = min(5.0, delay * 2)
        finally:
            self._unsent = 0
        self.enqueue_error = None
        spool = Path(job.source)
        with contextlib.suppress(OSError):
            spool.unlink()
        with contextlib.suppress(OSError):
            spool.parent.rmdir()  # the batch's spool folder, once its last file is gone

    def spec_message(self, job: ImageJob) -> dict[str, Any]:
        """The spec of ``job``'s choice as a message carries it (ValueError: not in the
        catalogue)."""
        key = (job.presets, job.formats)
        message = self._messages.get(key)
        if message is None:
            message = self._messages[key] = spec_to_dict(self._chosen.of(job))
        return message

    def _enqueue(self, job: ImageJob) -> None:
        deadline = time.monotonic() + ORIGINAL_DELETE_WAIT_S
        while not self.store.hold_original(job.sha256, job.job_id):
            # An earlier image of these bytes is deleting the original: store it after.
            if time.monotonic() > deadline or self._closing.wait(0.05):
                break
        self.storage.put_original(job.sha256, Path(job.source))
        if self.store.is_batch_cancelled(job.batch_id):
            # Cancelled while it waited here: its message would wait for a worker to let go
            # of the original; nothing else would.
            drop_original(self.store, self.storage, job.sha256, job.job_id)
            return
        self.app.send_task(
            TASK_NAME,
            args=[job.batch_id, job.job_id, job.sha256, self.spec_message(job)],
            task_id=job.job_id,
            queue=self.settings.celery_queue,
        )

    def cancel_batch(self, batch_id: str) -> None:
        """Nothing to do before the store's cancel: workers read the batch's cancel from the
        store before they start an image and between renditions."""

    def release_cancelled(self, images: list[tuple[str, str]]) -> None:
        """After the store's cancel: the originals of the images it cancelled (``(image_id,
        sha256)``) go now, not when a worker takes their messages (maybe never)."""
        for image_id, sha256 in images:
            try:
                drop_original(self.store, self.storage, sha256, image_id)
            except Exception as exc:  # a leftover original costs space; the worker retries
                log.warning("could not release the original of image %s: %s", image_id, exc)

    def shutdown(self, *, cancel_pending: bool = False) -> list[ImageJob]:
        """Stop sending; messages already sent stay with the broker and its workers."""
        self._closing.set()
        with contextlib.suppress(Exception):
            self.app.close()
        return []

    @property
    def unsent(self) -> int:
        """Images this service holds that the broker does not have yet (0 or 1: one feeder)."""
        return self._unsent

    def is_alive(self) -> bool:
        """True when the broker answered lately (asked in the background, see PROBE_*)."""
        # Only in the first seconds after start may a probe wait (for the first answer).
        self._first_answer.wait(max(0.0, self._started_at + FIRST_ANSWER_WAIT_S - time.monotonic()))
        return time.monotonic() - self._answered_at <= ANSWER_STALE_S

    @property
    def queued(self) -> int:
        """Messages waiting in the broker's queue (-1 when it does not answer)."""
        return self._depth if self.is_alive() else -1

    @property
    def in_flight(self) -> int:
        """Not tracked by the service: the workers hold the running images."""
        return 0

    def live_workers(self) -> int | None:
        """Workers answering a ping on this queue's control exchange (None if unknown)."""
        return self._workers if self.is_alive() else None

    def _probe_loop(self) -> None:
        """Ask the broker every second (workers every 5 s) until the engine closes."""
        pinged_at = -1e9
        while not self._closing.is_set():
            if self._check_broker():
                self._depth = self._queue_depth()
                if time.monotonic() - pinged_at >= WORKERS_EVERY_S:
                    self._workers = self._ping()
                    pinged_at = time.monotonic()
                self._answered_at = time.monotonic()
            self._first_answer.set()
            self._closing.wait(PROBE_INTERVAL_S)

    def _check_broker(self) -> bool:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_CHECK_TIMEOUT_S)
            return True
        except Exception:
            return False

    def _queue_depth(self) -> int:
        queue = self.settings.celery_queue
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_CHECK_TIMEOUT_S)
                channel: Any = conn.default_channel
                if hasattr(channel, "_size"):
                    # Redis: kombu's passive declare misses a queue under a key prefix; its
                    # length (all priority lists) is what the declare would report.
                    return int(channel._size(queue))
                return int(channel.queue_declare(queue, passive=True).message_count)
        except Exception as exc:
            if "NOT_FOUND" in str(exc):
                return 0  # no message was ever sent: the queue does not exist yet
            return -1

    def _ping(self) -> int | None:
        try:
            return len(self.app.control.ping(timeout=PING_TIMEOUT_S) or [])
        except Exception:
            return None
