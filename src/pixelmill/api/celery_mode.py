"""The service's part of the celery engine: owed callbacks and the resume rules.

Workers on other machines finish images and batches, so the service cannot send a batch's
callback from the transition that finished it. The store's batch scripts record each
finished batch with a callback_url as owed (atomically with the transition); a watcher here
reads the owed list, takes a short lease per batch (two services never send the same one
at once) and settles it once delivered or given up. At least once, across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pixelmill.api.metrics import Metrics
from pixelmill.config import ConfigError, Settings
from pixelmill.core.specs import RenderSpec
from pixelmill.engine.base import ImageJob
from pixelmill.preflight import celery_missing
from pixelmill.storage import Storage
from pixelmill.store import RedisBatchStore
from pixelmill.store.base import BatchStore, WorkCoordination

if TYPE_CHECKING:  # Celery is an extra: the local engine must not need it installed
    from pixelmill.engine.celery_engine import CeleryEngine

log = logging.getLogger(__name__)

OWED_POLL_S = 0.5
# A lease outlives every retry of one callback; a service that dies mid-way frees it then.
CALLBACK_LEASE_S = 120.0


class OwedCallbacks:
    """Sends the callbacks the store lists as owed; ``send(batch_id)`` must end in ``done``."""

    def __init__(self, store: WorkCoordination, send: Callable[[str], None]) -> None:
        self._store = store
        self._send = send
        self._owner = uuid.uuid4().hex
        self._sending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixelmill-callbacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """A batch just finished here: look at the owed list now, not at the next poll."""
        self._wake.set()

    def done(self, batch_id: str, settled: bool) -> None:
        """The send of ``batch_id`` ended: settled (delivered or given up) or still owed."""
        try:
            if settled:
                self._store.settle_callback(batch_id)
            else:  # cut short by a stop: the next service need not wait for the lease
                self._store.release_callback_lease(batch_id, self._owner)
        except Exception as exc:  # still owed: sent again later (at least once)
            log.warning("could not settle the callback of batch %s: %s", batch_id, exc)
        finally:
            with self._lock:
                self._sending.discard(batch_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._send_owed()
            except Exception as exc:  # the store is down: try again at the next round
                log.debug("owed callbacks not read: %s", exc)
            self._wake.wait(OWED_POLL_S)
            self._wake.clear()

    def _send_owed(self) -> None:
        for batch_id in self._store.owed_callbacks():
            if self._stop.is_set():
                return
            with self._lock:
                if batch_id in self._sending:
                    continue
            if not self._store.lease_callback(batch_id, self._owner, CALLBACK_LEASE_S):
                continue  # another service sends it
            with self._lock:
                self._sending.add(batch_id)
            self._send(batch_id)


def resume_enqueued(
    store: BatchStore, spool_root: Path, feed: Callable[[ImageJob], bool]
) -> set[Path]:
    """Send again the images a previous run spooled but never enqueued; returns their files.

    An unfinished image whose spool file is gone was handed to the broker (the file is
    deleted only after the message is sent): its worker finishes it, so it is left alone.
    ``feed`` queues a job with its batch's choice of renditions (False: it failed instead).
    """
    keep: set[Path] = set()
    for image in store.unfinished_images():
        path = Path(image.spool_path) if image.spool_path else None
        if path is None or image.sha256 is None or not path.is_relative_to(spool_root):
            continue  # in the broker, or spooled by another service sharing this store
        with contextlib.suppress(OSError):
            if path.is_file() and feed(
                ImageJob(image.image_id, str(path), image.sha256, image.batch_id)
            ):
                keep.add(path)
    return keep


@dataclass(frozen=True)
class CeleryParts:
    """What the service uses instead of its own pool, folder and counters in celery mode."""

    engine: CeleryEngine
    metrics: Metrics
    owed: OwedCallbacks

    def workers(self) -> int | None:
        return self.engine.live_workers()

    def start(
        self, store: BatchStore, spool_root: Path, feed: Callable[[ImageJob], bool]
    ) -> set[Path]:
        """Start sending owed callbacks and resume; returns the spool files still needed."""
        self.owed.start()
        return resume_enqueued(store, spool_root, feed)


def celery_parts(
    settings: Settings,
    spec: RenderSpec,
    store: BatchStore,
    storage: Storage,
    send: Callable[[str], None],
) -> CeleryParts | None:
    """The celery engine's parts, or None for the local engine (or a store not shared)."""
    if settings.engine != "celery" or not isinstance(store, RedisBatchStore):
        return None
    try:
        from pixelmill.engine.celery_engine import CeleryEngine
    except ImportError as exc:
        raise ConfigError(celery_missing(exc)) from None
    return CeleryParts(
        engine=CeleryEngine(settings, spec, store, storage),
        metrics=Metrics(image_stats=store.image_stats),
        owed=OwedCallbacks(store, send),
    )
