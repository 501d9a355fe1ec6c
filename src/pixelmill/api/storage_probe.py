"""Is the storage reachable? Asked in the background, so ``/healthz`` answers at once.

A bucket is HEADed every couple of seconds by a thread of its own; the probe reports the
last answer, and an answer older than ``ANSWER_STALE_S`` (a check that hangs) counts as
none. Folder storage is not probed: the data dir's own failures surface as image errors
and as the store's health.
"""

from __future__ import annotations

import logging
import threading
import time

from pixelmill.storage import FolderStorage, Storage

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
ANSWER_STALE_S = 15.0


class StorageProbe:
    """``reachable()``: did the storage answer its last check, lately?"""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.probed = not isinstance(storage, FolderStorage)
        self._answered_at = time.monotonic()  # the service checked it at start
        self._last_ok = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixelmill-storage-probe")
        self._thread.daemon = True

    def start(self) -> StorageProbe:
        if self.probed:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def reachable(self) -> bool:
        if not self.probed:
            return True
        return self._last_ok and time.monotonic() - self._answered_at <= ANSWER_STALE_S

    def _run(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL_S):
            try:
                self.storage.check()
            except Exception as exc:
                if self._last_ok:  # once per outage, not every probe
                    log.warning("the storage does not answer: %s", exc)
                self._last_ok = False
            else:
                if not self._last_ok:
                    log.warning("the storage answers again: %s", self.storage.describe())
                self._last_ok = True
            self._answered_at = time.monotonic()
