"""What the sync and async clients share: paths, parameters, answer parsing, timeouts."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from pixelmill import __version__
from pixelmill.client._errors import (
    INVALID_RESPONSE,
    NETWORK_ERROR,
    TIMEOUT,
    PixelmillError,
    error_from_response,
)
from pixelmill.client._models import ImageAccepted, WaitedImage
from pixelmill.client._upload import PathLike

Model = TypeVar("Model", bound=BaseModel)

# A rendition's file extension by format name (``jpg`` is accepted as a name too).
EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}
DOWNLOAD_CHUNK_BYTES = 256 * 1024
DEFAULT_TIMEOUT_S = 30.0
# An event stream is quiet while images render; the service sends a keep-alive every 15 s.
EVENTS_READ_TIMEOUT_S = 60.0
# How many times in a row a dropped event stream is reconnected before giving up.
MAX_RECONNECTS = 5
# wait() turns to polling sooner: its answer does not depend on the stream.
WAIT_RECONNECTS = 2
WAIT_POLL_INTERVAL_S = 1.0
# wait() without a timeout gives up once the service has not answered for this long.
UNREACHABLE_LIMIT_S = 30.0
# While the service does not answer, wait() polls less and less often, up to this.
UNREACHABLE_POLL_MAX_S = 8.0
# How long POST /v1/images?wait=true waits when no timeout is given (the service's default).
SERVICE_IMAGE_WAIT_S = 30.0
_HEX_64 = re.compile(r"[0-9a-f]{64}")
_PRESET_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def rendition_path(sha256: str, preset: str, fmt: str) -> str:
    """``/v1/images/<sha256>/<preset>.<ext>``; refuses names that could change the path."""
    extension = EXTENSIONS.get(fmt.lower())
    if extension is None:
        raise ValueError(f"unknown format {fmt!r}: choose one of jpeg, webp, avif, png")
    if not _PRESET_NAME.fullmatch(preset):
        raise ValueError(f"bad preset name {preset!r}: letters, digits and _ only")
    return f"{image_path(sha256)}/{preset}.{extension}"


def image_path(sha256: str) -> str:
    if not _HEX_64.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a SHA-256 hex digest (64 lowercase hex digits)")
    return f"/v1/images/{sha256}"


def batch_path(batch_id: str) -> str:
    # Quoted whole, so an odd string names no batch rather than another route.
    return f"/v1/batches/{quote(batch_id, safe='')}"


def choice_fields(
    presets: Sequence[str] | None, formats: Sequence[str] | None
) -> list[tuple[str, str]]:
    """The optional ``presets``/``formats`` form fields, comma-separated."""
    fields: list[tuple[str, str]] = []
    for name, chosen in (("presets", presets), ("formats", formats)):
        if chosen is None:
            continue
        if isinstance(chosen, str):  # "a,b" given as one string: fine, send it as it is
            chosen = [chosen]
        fields.append((name, ",".join(item.strip() for item in chosen)))
    return fields


def list_params(limit: int | None, cursor: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return params


def checked(response: httpx.Response) -> httpx.Response:
    """``response`` if it succeeded; else the PixelmillError it stands for (body read)."""
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def parse(model: type[Model], response: httpx.Response) -> Model:
    """The JSON body of a successful answer as ``model``."""
    try:
        return model.model_validate_json(checked(response).content)
    except ValidationError as exc:
        raise PixelmillError(
            INVALID_RESPONSE,
            f"{response.request.method} {response.request.url.path} answered a body this "
            f"client cannot read: {exc.errors()[0]['msg'] if exc.errors() else exc}",
            response.status_code,
        ) from None


def parse_image_answer(response: httpx.Response) -> ImageAccepted | WaitedImage:
    """``POST /v1/images``: 200 is the finished image's record, 202 an acceptance."""
    if checked(response).status_code == 200:
        return parse(WaitedImage, response)
    return parse(ImageAccepted, response)


def download_target(dest: PathLike, path: str) -> Path:
    """Where a download goes: ``dest`` itself, or ``dest/<preset>.<ext>`` for a folder (one
    that exists, or any path ending in a separator, which is created)."""
    target = Path(dest)
    names_a_folder = os.fspath(dest).endswith(("/", os.sep))
    if names_a_folder:
        target.mkdir(parents=True, exist_ok=True)
    return target / path.rsplit("/", 1)[1] if names_a_folder or target.is_dir() else target


def service_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/``; a ValueError unless it is an http(s) address."""
    url = base_url.rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"bad base_url {base_url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"bad base_url {base_url!r}: give an http:// or https:// address, "
            "such as http://127.0.0.1:8000"
        )
    return url


def client_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"pixelmill-client/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def as_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def with_read(timeout: httpx.Timeout, read_s: float) -> httpx.Timeout:
    """``timeout`` with another read timeout (for answers that come late by design)."""
    return httpx.Timeout(
        connect=timeout.connect, read=read_s, write=timeout.write, pool=timeout.pool
    )


def image_wait(
    wait: bool, timeout_s: float | None, client_timeout: httpx.Timeout
) -> tuple[dict[str, str], httpx.Timeout]:
    """Query parameters and request timeouts of ``POST /v1/images`` with or without a wait."""
    if not wait:
        return {}, client_timeout
    params = {"wait": "true"}
    if timeout_s is not None:
        params["timeout"] = str(timeout_s)
    if client_timeout.read is None:
        return params, client_timeout
    # The service answers after its wait: read for that long, plus the usual.
    read_s = client_timeout.read + (timeout_s or SERVICE_IMAGE_WAIT_S)
    return params, with_read(client_timeout, read_s)


class Deadline:
    """When a ``wait(batch_id, timeout)`` gives up: at ``timeout`` (no end when it is None),
    or, without a timeout, once the service has not answered for ``UNREACHABLE_LIMIT_S``.

    Given up while the service does not answer, it raises the last failure to reach it
    (``network_error``, say), not ``timeout``: the batch may be fine, the service is not there.
    """

    def __init__(self, batch_id: str, timeout_s: float | None) -> None:
        self.batch_id = batch_id
        self.timeout_s = timeout_s
        self.at = None if timeout_s is None else time.monotonic() + timeout_s
        self.last_answer = time.monotonic()
        self.unreachable: PixelmillError | None = None
        self.unanswered = 0

    def answered(self) -> None:
        """The service answered: it can be reached."""
        self.last_answer = time.monotonic()
        self.unreachable = None
        self.unanswered = 0

    def failed(self, error: PixelmillError) -> None:
        """A request failed: raise ``error`` unless asking again may work and there is time."""
        if not error.transient:
            raise error
        if isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout):
            self.unreachable = error
            self.unanswered += 1
        elif error.status is not None:  # a busy service, or a proxy in front of it, answered
            self.answered()
        self.check()

    def _give_up_at(self) -> float | None:
        if self.at is None and self.unreachable is not None:
            return self.last_answer + UNREACHABLE_LIMIT_S
        return self.at

    def remaining(self) -> float | None:
        give_up_at = self._give_up_at()
        return None if give_up_at is None else max(0.0, give_up_at - time.monotonic())

    def capped(self, seconds: float) -> float:
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)

    def poll_delay(self, poll_interval: float) -> float:
        """The pause before the next poll: longer each time the service did not answer."""
        if not self.unanswered:
            return self.capped(poll_interval)
        backoff = max(poll_interval, 0.5) * 2 ** (self.unanswered - 1)
        return self.capped(min(backoff, max(poll_interval, UNREACHABLE_POLL_MAX_S)))

    def check(self) -> None:
        """Raise once it is time to give up: the last failure to reach the service, if the
        service did not answer last, else the ``timeout`` error."""
        give_up_at = self._give_up_at()
        if give_up_at is None or time.monotonic() < give_up_at:
            return
        if self.unreachable is not None:
            silent_s = time.monotonic() - self.last_answer
            raise PixelmillError(
                NETWORK_ERROR,
                f"the service is unreachable: no answer for {silent_s:.0f} s while waiting "
                f"for batch {self.batch_id} (last: {self.unreachable.message})",
            )
        raise PixelmillError(
            TIMEOUT, f"batch {self.batch_id} did not finish within {self.timeout_s} s"
        )


def partial_path(target: Path) -> Path:
    """Where a download is written before it is renamed to ``target`` (same folder)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


def naming_target(exc: OSError, part: Path, target: Path) -> OSError:
    """``exc`` about the hidden ``.part`` file, told about the file asked for instead."""
    if str(part) not in (exc.filename, exc.filename2) and str(part) not in str(exc):
        return exc
    if exc.errno is not None and exc.strerror:
        return type(exc)(exc.errno, exc.strerror, str(target))
    return OSError(f"{target}: {str(exc).replace(str(part), str(target))}")
