"""Dependencies shared by the routes: the service, the URL signer, and the API key check."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Request

from pixelmill.api.errors import echoed
from pixelmill.api.service import BatchService
from pixelmill.api.signing import UrlSigner, Verdict
from pixelmill.errors import NotFound, Unauthorized

_ID_PATTERN = re.compile(r"[0-9a-f]{32}")  # used with fullmatch: no trailing newline


def get_service(request: Request) -> BatchService:
    service: BatchService = request.app.state.service
    return service


ServiceDep = Annotated[BatchService, Depends(get_service)]


def get_url_signer(request: Request) -> UrlSigner | None:
    """The app's URL signer; None without an API key (URLs are handed out unsigned)."""
    signer: UrlSigner | None = getattr(request.app.state, "url_signer", None)
    return signer


SignerDep = Annotated[UrlSigner | None, Depends(get_url_signer)]


# Routes PIXELMILL_PUBLIC_RENDITIONS opens to anyone (GET and HEAD), by route name.
PUBLIC_RENDITION_ROUTES = frozenset({"get_manifest", "get_rendition"})
# What a signed URL authorises: reading, never changing anything.
SIGNED_URL_METHODS = frozenset({"GET", "HEAD"})


def require_api_key(request: Request) -> None:
    """With ``PIXELMILL_API_KEY`` set, demand ``Authorization: Bearer <key>``, or for a GET
    or HEAD a signed URL of exactly this path (see api/signing.py)."""
    settings = get_service(request).settings
    expected = settings.api_key
    if not expected:
        return
    reading = request.method in SIGNED_URL_METHODS
    route_name = getattr(request.scope.get("route"), "name", None)
    if settings.public_renditions and reading and route_name in PUBLIC_RENDITION_ROUTES:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of the key was right.
    if scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        return
    expires, sig = request.query_params.get("expires"), request.query_params.get("sig")
    signer = get_url_signer(request)
    if (
        len(request.query_params.getlist("expires")) > 1
        or len(request.query_params.getlist("sig")) > 1
    ):
        raise Unauthorized("a signed URL has one 'expires' and one 'sig'")
    if (expires is None and sig is None) or signer is None:
        raise Unauthorized("a valid 'Authorization: Bearer <key>' header is required")
    if not reading:
        raise Unauthorized(
            "a signed URL authorises GET and HEAD only: send 'Authorization: Bearer <key>'"
        )
    verdict = signer.verify(_route_path(request), expires or "", sig or "")
    if verdict is Verdict.EXPIRED:
        raise Unauthorized("the signed URL has expired: ask the API for a fresh one")
    if verdict is not Verdict.VALID:
        raise Unauthorized("the URL's signature does not match its path and expiry")


def _route_path(request: Request) -> str:
    """The path as the API hands it out: without the prefix a proxy mounts the app under."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def checked_id(value: str, what: str) -> str:
    """A batch or image id as we issue them; anything else names nothing (404)."""
    if not _ID_PATTERN.fullmatch(value):
        raise NotFound(f"no {what} {echoed(value)}")
    return value
