"""Signed URLs: a path plus ``?expires=<unix seconds>&sig=<hex HMAC-SHA256>`` that authorises
a GET or HEAD of exactly that path until it expires, with no header (``<img src>``,
``EventSource``).

The signature is the hex HMAC-SHA256 of ``"<path>?expires=<n>"`` keyed by the signing key
(``Settings.url_signing_secret``). Expiries are rounded up to a bucket, so the URL of a
rendition stays the same for a while and caches (browsers, CDNs) keep hitting: see
``expiry``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable
from typing import Any

from pixelmill.config import Settings

# The longest step expiries are rounded up by; a tenth of the TTL when that is shorter.
MAX_EXPIRY_BUCKET_S = 3600
# ASCII digits only, and few: a bigger number is not a time, and int() of it costs.
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# The fields of API answers that hold a URL of ours, and the lists of records that may.
_URL_FIELDS = ("status_url", "events_url", "path")
_NESTED_FIELDS = ("images", "renditions")


class Verdict(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"


def signature(key: bytes, path: str, expires: int) -> str:
    """The hex HMAC-SHA256 of ``"<path>?expires=<expires>"`` keyed by ``key``."""
    message = f"{path}?expires={expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def expiry_bucket_s(ttl_s: int) -> int:
    """The step expiries are rounded up to: 3600 s, or a tenth of the TTL when shorter."""
    return max(1, min(MAX_EXPIRY_BUCKET_S, ttl_s // 10))


def expiry(now: float, ttl_s: int) -> int:
    """``now + ttl_s`` rounded up to the next multiple of the bucket (never sooner).

    With the default TTL (86 400 s) a URL made now expires 24 to 25 hours from now, on the
    hour (UTC), and every URL of a path made within the same hour is the same.
    """
    bucket = expiry_bucket_s(ttl_s)
    return math.ceil((math.ceil(now) + ttl_s) / bucket) * bucket


class UrlSigner:
    """Signs the paths the API hands out and checks the signed ones it is given."""

    def __init__(
        self,
        key: bytes,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
        previous_keys: tuple[bytes, ...] = (),
    ) -> None:
        self._key = key
        self._keys = (key, *previous_keys)  # checked in turn; only the first signs
        self.ttl_s = ttl_s
        self._clock = clock

    def sign(self, path: str, now: float | None = None) -> str:
        """``path?expires=N&sig=HEX``, valid for at least the TTL from ``now``."""
        expires = expiry(self._clock() if now is None else now, self.ttl_s)
        return f"{path}?expires={expires}&sig={signature(self._key, path, expires)}"

    def verify(self, path: str, expires: str, sig: str, now: float | None = None) -> Verdict:
        """Whether ``expires`` and ``sig`` (as given in the query) sign ``path`` and still hold.

        The comparison takes the same time however much of the signature is right. A
        signature that does not match is BAD_SIGNATURE even when also past its expiry.
        """
        # One spelling per URL (no padding, leading zeros or capitals): one key in a cache.
        if _EXPIRES.fullmatch(expires) is None or _SIGNATURE.fullmatch(sig) is None:
            return Verdict.BAD_SIGNATURE
        matches = [
            hmac.compare_digest(sig, signature(key, path, int(expires))) for key in self._keys
        ]
        if not any(matches):
            return Verdict.BAD_SIGNATURE
        if int(expires) <= (self._clock() if now is None else now):
            return Verdict.EXPIRED
        return Verdict.VALID

    def sign_urls(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of an API answer with every URL of ours in it signed.

        Those are ``status_url``, ``events_url`` and each rendition's ``path``, at the top or
        in ``images`` / ``renditions`` lists (a batch, an image record, a manifest).
        """
        signed = dict(body)
        for name in _URL_FIELDS:
            value = signed.get(name)
            if isinstance(value, str) and value.startswith("/v1/") and "?" not in value:
                signed[name] = self.sign(value)
        for name in _NESTED_FIELDS:
            items = signed.get(name)
            if isinstance(items, list):
                signed[name] = [
                    self.sign_urls(item) if isinstance(item, dict) else item for item in items
                ]
        return signed


def url_signer(settings: Settings) -> UrlSigner | None:
    """The signer these settings describe; None without an API key (URLs stay as they are)."""
    key = settings.url_signing_secret
    if key is None:
        return None
    return UrlSigner(key, settings.url_ttl_s, previous_keys=settings.url_previous_secrets)


def signed_urls(signer: UrlSigner | None, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its URLs signed when there is a signer, else ``body`` itself."""
    return body if signer is None else signer.sign_urls(body)
