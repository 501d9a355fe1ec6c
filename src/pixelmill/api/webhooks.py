"""Batch-finished callbacks: one signed POST per batch, retried with backoff, off the hot path."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
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
ALLOW_PRIVATE_SETTING = "PIXELMILL_WEBHOOK_ALLOW_PRIVATE"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _networks(*cidrs: str) -> Networks:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Never a callback target, whatever the settings: cloud metadata services, "this network",
# and addresses no unicast server has.
_ALWAYS_REFUSED: tuple[tuple[str, Networks], ...] = (
    ("a cloud metadata address", _networks("fd00:ec2::254/128")),
    ("a link-local address", _networks("169.254.0.0/16", "fe80::/10")),
    ("an unspecified address", _networks("0.0.0.0/8", "::/128")),
    ("a multicast address", _networks("224.0.0.0/4", "ff00::/8")),
    ("a reserved address", _networks("240.0.0.0/4")),
)
# Refused unless PIXELMILL_WEBHOOK_ALLOW_PRIVATE=true: this machine and private networks.
_PRIVATE_UNLESS_ALLOWED: tuple[tuple[str, Networks], ...] = (
    ("a loopback address", _networks("127.0.0.0/8", "::1/128")),
    (
        "a private address",
        _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
    ),
)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# The well-known NAT64 prefix (RFC 6052): a NAT64 gateway connects to the IPv4 address in
# the last 32 bits, so 64:ff9b::a00:1 reaches 10.0.0.1.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Up to the LAST "@" of the authority, as URL parsers split it: a password may hold an "@".
_USERINFO = re.compile(r"(?<=://)[^/?#]*@")


class CallbackRefused(InvalidRequest):
    """A callback address the policy forbids (at creation: 400; at send time: not sent)."""


class CallbackUnresolved(CallbackRefused):
    """The callback's host did not resolve (at creation: 400; at send time: retried)."""


def redact_url(url: str) -> str:
    """``url`` fit for a log line: no ``user:password@``, no query string (tokens live there)."""
    text = _USERINFO.sub("***@", str(url))
    base, question, _ = text.partition("?")
    return base + ("?***" if question else "")


def _plain_address(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form stands for: IPv4-mapped (::ffff:a.b.c.d), -compatible,
    NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: nor ::1
            # IPv4-compatible (::a.b.c.d), deprecated but still routed by some stacks.
            return ipaddress.IPv4Address(int(address))
    return address


class AddressPolicy:
    """DESIGN.md's callback address policy: which addresses a callback may connect to."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be a callback target, or None when it may."""
        shown = str(address)
        ip = _plain_address(ipaddress.ip_address(shown.split("%", 1)[0]))
        for what, networks in _ALWAYS_REFUSED:
            if any(ip in network for network in networks if network.version == ip.version):
                return f"{shown} is {what}, never a callback target"
        if not self.allow_private:
            for what, networks in _PRIVATE_UNLESS_ALLOWED:
                if any(ip in network for network in networks if network.version == ip.version):
                    return f"{shown} is {what}; allowed only with {ALLOW_PRIVATE_SETTING}=true"
        return None

    def resolve(self, url: str) -> list[str]:
        """Every address ``url``'s host resolves to, each allowed; else CallbackRefused.

        All of them must pass: a name that resolves to one public and one private address
        would otherwise reach the private one on some connections.
        """
        parsed = httpx.URL(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise CallbackUnresolved(
                f"callback_url host {host!r} does not resolve: {exc}"
            ) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not addresses:
            raise CallbackUnresolved(f"callback_url host {host!r} does not resolve")
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                named = "" if host == address else f" ({host!r} resolves to it)"
                raise CallbackRefused(f"callback_url refused: {reason}{named}")
        return addresses


class PinnedTransport(httpx.HTTPTransport):
    """Sends only to a literal IP address the policy allows: the peer is checked, not a name.

    The sender resolves a callback's host once, checks the addresses and puts the chosen
    one in the URL (keeping ``Host`` and, for https, the TLS server name and certificate
    check on the real name), so a DNS answer that changes between check and connect
    (DNS rebinding) reaches nothing the policy forbids.
    """

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        try:
            reason = self.policy.refusal(host)
        except ValueError:
            reason = f"{host!r} is not an address checked against the callback policy"
        if reason is not None:
            raise CallbackRefused(f"callback refused at send time: {reason}")
        return super().handle_request(request)


def validate_callback_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host, else InvalidRequest.

    The syntax only; ``AddressPolicy.resolve`` checks where it points.
    """
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
        allow_private: bool = False,
    ) -> None:
        self.secret = secret
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.policy = AddressPolicy(allow_private)
        # No proxies from the environment (they would connect for us, unchecked), no redirects.
        # No kept-alive connections: the pool knows them by the pinned address only, so a
        # callback to another name on that address would ride the first one's connection
        # (and TLS session: its certificate never checked). One POST per batch needs none.
        self._client = httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            transport=PinnedTransport(
                self.policy, limits=httpx.Limits(max_keepalive_connections=0)
            ),
        )
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
        """POST ``body`` until a 2xx or the attempts run out; True when delivered.

        A target the address policy refuses is not retried: it will not change its mind. A
        host that does not resolve is: DNS failures are often passing ones.
        """
        headers = {"Content-Type": "application/json", "User-Agent": "pixelmill-webhook"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        shown = redact_url(url)
        for attempt in range(self.attempts):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                if self._stopping.wait(delay):
                    break
            try:
                response = self._post_pinned(url, body, headers)
            except CallbackUnresolved as exc:
                log.warning(
                    "callback to %s failed (attempt %d): %s", shown, attempt + 1, exc.message
                )
                continue
            except CallbackRefused as exc:
                log.warning("callback to %s not sent: %s", shown, exc.message)
                return False
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                reason = str(exc).replace(url, shown)
                log.warning("callback to %s failed (attempt %d): %s", shown, attempt + 1, reason)
                continue
            if 200 <= response.status_code < 300:
                return True
            log.warning(
                "callback to %s answered %d (attempt %d)", shown, response.status_code, attempt + 1
            )
        return False

    def _post_pinned(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST to the addresses ``url``'s host resolves to (all checked), in order, until
        one accepts the connection (as a browser falls back from ::1 to 127.0.0.1)."""
        target = httpx.URL(url)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        host_header = target.netloc.decode("ascii").rpartition("@")[2]
        addresses = self.policy.resolve(url)
        for index, address in enumerate(addresses):
            try:
                return self._client.post(
                    target.copy_with(host=address),
                    content=body,
                    headers={**headers, "Host": host_header},
                    extensions=extensions,
                )
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable: resolve() returns at least one address")

    def close(self, wait_s: float = 5.0) -> None:
        """Let deliveries in progress finish for up to ``wait_s``, then give up on retries."""
        deadline = time.monotonic() + wait_s
        self._pool.shutdown(wait=False)
        # ThreadPoolExecutor has no timed shutdown: wait on its threads ourselves.
        for thread in list(getattr(self._pool, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stopping.set()
        self._client.close()
