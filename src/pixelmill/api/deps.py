"""Dependencies shared by the routes: the service, and the API key check."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Request

from pixelmill.api.service import BatchService
from pixelmill.errors import NotFound, Unauthorized

_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def get_service(request: Request) -> BatchService:
    service: BatchService = request.app.state.service
    return service


ServiceDep = Annotated[BatchService, Depends(get_service)]


def require_api_key(request: Request) -> None:
    """With ``PIXELMILL_API_KEY`` set, demand ``Authorization: Bearer <key>``."""
    expected = get_service(request).settings.api_key
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of the key was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise Unauthorized("a valid 'Authorization: Bearer <key>' header is required")


def checked_id(value: str, what: str) -> str:
    """A batch or image id as we issue them; anything else names nothing (404)."""
    if not _ID_PATTERN.match(value):
        raise NotFound(f"no {what} {value!r}")
    return value
