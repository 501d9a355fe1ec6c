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
from pixelmill.engine.base import ImageJob
from pixelmill.engine.celery_app import TASK_NAME, make_app, spec_to_dict
from pixelmill.storage import Storage
from pixelmill.store.base import WorkCoordination

log = logging.getLogger(__name__)

BROKER_CHECK_TIMEOUT_S = 2
# How long a broker answer (reachable, queue depth, workers) is reused: probes poll often.
ANSWER_TTL_S = 1.0
WORKERS_TTL_S = 5.0
PING_TIMEOUT_S = 0.5


class _Cached:
    """A value recomputed at most every ``ttl_s`` (a broker round trip per probe is too many)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._at = -1e9
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self, compute: Any) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._value = compute()
                self._at = time.monotonic()
            return self._value


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
        self.spec_message = spec_to_dict(spec)
        self.store = store
        self.storage = storage
        self.app: Celery = make_app(settings)
        self._closing = threading.Event()
        self._reachable = _Cached(ANSWER_TTL_S)
        self._depth = _Cached(ANSWER_TTL_S)
        self._workers = _Cached(WORKERS_TTL_S)
        self._started = False

    def start(self) -> CeleryEngine:
        self._started = True
        return self

    def submit(self, job: ImageJob) -> None:
        """Hold and store the original, send the task, then drop the spool file.

        Retried while the broker or storage is down (the feeder waits, as on a full queue);
        a stop leaves the spool file, so the next start sends it again.
        """
        delay = 0.2
        while True:
            if self._closing.is_set():
                raise RuntimeError("the engine is shutting down")
            try:
                self._enqueue(job)
                break
            except Exception as exc:
                log.warning("could not enqueue image %s (retrying): %s", job.job_id, exc)
                self._closing.wait(delay)
                delay = min(5.0, delay * 2)
        spool = Path(job.source)
        with contextlib.suppress(OSError):
            spool.unlink()
        with contextlib.suppress(OSError):
            spool.parent.rmdir()  # the batch's spool folder, once its last file is gone

    def _enqueue(self, job: ImageJob) -> None:
        self.store.hold_original(job.sha256, job.job_id)
        self.storage.put_original(job.sha256, Path(job.source))
        self.app.send_task(
            TASK_NAME,
            args=[job.batch_id, job.job_id, job.sha256, self.spec_message],
            task_id=job.job_id,
            queue=self.settings.celery_queue,
        )

    def cancel_batch(self, batch_id: str) -> None:
        """Nothing to do here: workers read the batch's cancel from the store before they
        start an image and between renditions."""

    def shutdown(self, *, cancel_pending: bool = False) -> list[ImageJob]:
        """Stop sending; messages already sent stay with the broker and its workers."""
        self._closing.set()
        with contextlib.suppress(Exception):
            self.app.close()
        return []

    def is_alive(self) -> bool:
        """True when the broker answers (checked at most once a second, bounded)."""
        return bool(self._reachable.get(self._check_broker))

    @property
    def queued(self) -> int:
        """Messages waiting in the broker's queue (-1 when it does not answer)."""
        return int(self._depth.get(self._queue_depth))

    @property
    def in_flight(self) -> int:
        """Not tracked by the service: the workers hold the running images."""
        return 0

    def live_workers(self) -> int | None:
        """Workers answering a ping on this queue's control exchange (None if unknown)."""
        value = self._workers.get(self._ping)
        return None if value is None else int(value)

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
