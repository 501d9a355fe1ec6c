"""One pub/sub listener per Redis store: a thread subscribed by pattern wakes every waiter.

Without it each wait opened a pub/sub connection of its own (one per open event stream,
every two seconds). Here one connection carries every batch's version messages; waiters
block on a condition and are woken when their batch's version passes theirs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import redis

log = logging.getLogger(__name__)

# How long the listener blocks for a message before looking at its stop flag.
LISTEN_SLICE_S = 1.0
RECONNECT_MAX_S = 5.0
SUBSCRIBE_WAIT_S = 2.0


class ChangeListener:
    """Latest version seen per watched batch, fed by ``PSUBSCRIBE {prefix}events:*``."""

    def __init__(self, client: redis.Redis, channel_prefix: str) -> None:
        self._client = client
        self._channel_prefix = channel_prefix
        self._changed = threading.Condition()
        self._latest: dict[str, int] = {}
        self._watchers: Counter[str] = Counter()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def watch(self, batch_id: str) -> None:
        """Start recording versions of ``batch_id`` (before reading its current version)."""
        self._ensure_running()
        with self._changed:
            self._watchers[batch_id] += 1

    def unwatch(self, batch_id: str) -> None:
        with self._changed:
            self._watchers[batch_id] -= 1
            if self._watchers[batch_id] <= 0:
                del self._watchers[batch_id]
                self._latest.pop(batch_id, None)

    def wait(self, batch_id: str, since_version: int, timeout_s: float) -> int | None:
        """A version above ``since_version`` announced within ``timeout_s``, else None."""
        with self._changed:
            # Not woken by close(): a closed listener announces nothing, and a waiter that
            # returned at once would re-read Redis in a tight loop until its own deadline.
            self._changed.wait_for(
                lambda: self._latest.get(batch_id, 0) > since_version, timeout=timeout_s
            )
            version = self._latest.get(batch_id, 0)
        return version if version > since_version else None

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(LISTEN_SLICE_S * 3)

    def _ensure_running(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                if self._stop.is_set():
                    return
                self._subscribed.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="pixelmill-redis-changes", daemon=True
                )
                self._thread.start()
        # Messages published before the subscription took effect would be missed: wait for
        # it (bounded; the waiters also re-read the version now and then).
        self._subscribed.wait(SUBSCRIBE_WAIT_S)

    def _listen(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            pubsub: Any = self._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(f"{self._channel_prefix}*")
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=LISTEN_SLICE_S)
                    if message is not None:
                        self._handle(message)
                        delay = 0.1
            except (redis.RedisError, OSError, ValueError) as exc:
                self._subscribed.clear()
                log.debug("change listener lost Redis, reconnecting: %s", exc)
                self._stop.wait(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
            finally:
                pubsub.close()

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "psubscribe":
            self._subscribed.set()
            return
        if message.get("type") != "pmessage":
            return
        batch_id = str(message["channel"]).removeprefix(self._channel_prefix)
        try:
            version = int(message["data"])
        except (TypeError, ValueError):
            return
        with self._changed:
            if batch_id in self._watchers and version > self._latest.get(batch_id, 0):
                self._latest[batch_id] = version
                self._changed.notify_all()
