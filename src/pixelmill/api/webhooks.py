"""Batch-finished callbacks: one signed POST per batch, retried with backoff, off the hot path."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from pixelmill.errors import InvalidRequest

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pixelmill-Signature"
# Batches bigger than this are posted without their per-image records (DESIGN.md).
MAX_IMAGES_IN_CALLBACK = 100


def validate_callback_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host, else InvalidRequest."""
    message = "callback_url must be an absolute http:// or https:// URL"
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # a malformed port raises here, not at delivery time
        httpx.URL(url.strip())
    except (ValueError, httpx.InvalidURL):
        raise InvalidRequest(message) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(message)
    return url.strip()


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of body>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def callback_body(status: dict[str, Any]) -> bytes:
    """The raw JSON posted for a finished batch (the bytes that get signed)."""
    images = status.get("images")
    if isinstance(images, list) and len(images) > MAX_IMAGES_IN_CALLBACK:
        status = {k: v for k, v in status.items() if k != "images"}
    return json.dumps(status, separators=(",", ":")).encode()


class WebhookSender:
    """Posts callbacks from a small thread pool; never blocks the caller."""

    def __init__(
        self,
        secret: str | None,
        attempts: int,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 10.0,
        threads: int = 4,
    ) -> None:
        self.secret = secret
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pixelmill-webhook")
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        """True once ``close`` gave up on retries (the service is going down)."""
        return self._stopping.is_set()

    def schedule(self, build: Callable[[], tuple[str, bytes] | None]) -> Future[bool]:
        """Deliver what ``build()`` returns, ``(url, body)``, in the background.

        ``build`` runs in the sender's thread too, so the caller (the engine's dispatcher)
        never waits for a store read or the network.
        """
        return self._pool.submit(self._build_and_deliver, build)

    def _build_and_deliver(self, build: Callable[[], tuple[str, bytes] | None]) -> bool:
        try:
            target = build()
        except Exception:
            log.exception("could not build a callback")
            return False
        return target is not None and self.deliver(*target)

    def deliver(self, url: str, body: bytes) -> bool:
        """POST ``body`` until a 2xx or the attempts run out; True when delivered."""
        headers = {"Content-Type": "application/json", "User-Agent": "pixelmill-webhook"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        for attempt in range(self.attempts):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                if self._stopping.wait(delay):
                    break
            try:
                response = self._client.post(url, content=body, headers=headers)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                log.warning("callback to %s failed (attempt %d): %s", url, attempt + 1, exc)
                continue
            if 200 <= response.status_code < 300:
                return True
            log.warning(
                "callback to %s answered %d (attempt %d)", url, response.status_code, attempt + 1
            )
        return False

    def close(self, wait_s: float = 5.0) -> None:
        """Let deliveries in progress finish for up to ``wait_s``, then give up on retries."""
        deadline = time.monotonic() + wait_s
        self._pool.shutdown(wait=False)
        # ThreadPoolExecutor has no timed shutdown: wait on its threads ourselves.
        for thread in list(getattr(self._pool, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stopping.set()
        self._client.close()
