"""Store writes that must not be lost: applied now, or kept in order and retried with backoff.

An engine outcome whose store write fails (Redis down, a full disk under SQLite) is kept in
memory and retried on a thread of its own, so the engine's dispatcher never waits for the
store. Until the write lands the image's spool file stays, so a restart resumes the image
if the process dies first. Transitions are idempotent, so a write retried after it in fact
succeeded counts once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


class StoreWriteRetrier:
    """Runs store writes; a failed one waits (with later ones behind it) and is retried."""

    def __init__(
        self, *, first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S
    ) -> None:
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._waiting: deque[tuple[str, Callable[[], None]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="pixelmill-store-retry")
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        """How many writes wait for the store."""
        return len(self._waiting)

    @property
    def last_error(self) -> str | None:
        """Why the oldest waiting write failed last, or None when nothing waits."""
        return self._last_error if self._waiting else None

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, what: str, write: Callable[[], None]) -> None:
        """Run ``write`` now; when it raises (or older writes still wait), keep it for later."""
        # No lock here: a retry holds it for as long as the store takes to fail (seconds when
        # Redis is frozen), and the caller is the engine's dispatcher. Appending to and
        # reading the length of a deque are atomic; only the retry side pops.
        if not self._waiting:
            try:
                write()
                return
            except Exception as exc:
                self._failed(what, exc, first=True)
        self._waiting.append((what, write))
        self._wake.set()

    def flush(self, timeout_s: float) -> int:
        """Try the waiting writes for up to ``timeout_s``; return how many still wait."""
        deadline = time.monotonic() + timeout_s
        while self._waiting and time.monotonic() < deadline:
            if not self._attempt_oldest():
                time.sleep(min(self.first_delay_s, max(0.0, deadline - time.monotonic())))
        return len(self._waiting)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        delay = self.first_delay_s
        while not self._stop.is_set():
            if not self._waiting:
                self._wake.wait(1.0)
                self._wake.clear()
                delay = self.first_delay_s
                continue
            if self._attempt_oldest():
                delay = self.first_delay_s
            else:
                self._stop.wait(delay)
                delay = min(self.max_delay_s, delay * 2)

    def _attempt_oldest(self) -> bool:
        with self._lock:  # one attempt at a time: flush() and the thread share the head
            if not self._waiting:
                return True
            what, write = self._waiting[0]
            try:
                write()
            except Exception as exc:
                self._failed(what, exc, first=False)
                return False
            self._waiting.popleft()
            if not self._waiting:
                log.warning("the store takes writes again; every waiting outcome is written")
            return True

    def _failed(self, what: str, exc: Exception, *, first: bool) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if first or reason != self._last_error:  # one line per new reason, not per retry
            log.warning("store write failed (%s), kept and retried: %s", what, reason)
        self._last_error = reason
