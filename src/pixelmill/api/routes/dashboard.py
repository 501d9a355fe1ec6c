"""``GET /``: the dashboard, a page of plain files shipped in the package.

The page talks to the public ``/v1`` API like any other client; this module only serves
its files. They are read once (they are small) and answered with strong ETags. The HTML
names each asset as ``/dashboard/<file>?v=<hash of its bytes>``, so an asset fetched with
the right ``v`` may be cached for a year: new bytes get a new URL. The HTML itself is
``no-cache`` (revalidated each time, cheaply through ``If-None-Match``).

No API key is needed for these files: they hold no data. The page learns from a meta tag
whether to ask for a key, and sends it on its own requests to ``/v1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pixelmill.config import Settings
from pixelmill.errors import NotFound

router = APIRouter(include_in_schema=False)

# The files the page is made of (package data under pixelmill/api/dashboard/).
PAGE_FILE = "index.html"
ASSET_TYPES = {
    "dashboard.css": "text/css; charset=utf-8",
    "thumbhash.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "batches.js": "text/javascript; charset=utf-8",
    "gallery.js": "text/javascript; charset=utf-8",
    "detail.js": "text/javascript; charset=utf-8",
    "uploads.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
HTML_TYPE = "text/html; charset=utf-8"
# Hex digits of an asset's SHA-256 in its ?v= (a cache buster, not a security check).
VERSION_CHARS = 12
IMMUTABLE = "public, max-age=31536000, immutable"
# Nothing but our own files: no inline script or style, no other host.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Where index.html says whether the page must ask for a key (filled in when served).
AUTH_MARK = "{{auth}}"


@dataclass(frozen=True)
class ShippedFile:
    """One file as served: its bytes, type, strong ETag and short content hash."""

    body: bytes
    media_type: str
    etag: str
    version: str


def _shipped(body: bytes, media_type: str) -> ShippedFile:
    digest = hashlib.sha256(body).hexdigest()
    return ShippedFile(body, media_type, f'"{digest[:32]}"', digest[:VERSION_CHARS])


@cache
def assets() -> dict[str, ShippedFile]:
    """The page's CSS and scripts, read from the package once."""
    folder = resources.files("pixelmill.api") / "dashboard"
    return {
        name: _shipped(folder.joinpath(name).read_bytes(), media_type)
        for name, media_type in ASSET_TYPES.items()
    }


@cache
def page(auth: str) -> ShippedFile:
    """index.html with its asset URLs versioned and the auth meta tag set to ``auth``."""
    html = (resources.files("pixelmill.api") / "dashboard" / PAGE_FILE).read_text("utf-8")
    for name, asset in assets().items():
        html = html.replace(f'"/dashboard/{name}"', f'"/dashboard/{name}?v={asset.version}"')
    return _shipped(html.replace(AUTH_MARK, auth).encode(), HTML_TYPE)


def auth_mode(settings: Settings) -> str:
    """What the meta tag tells the page: ``key`` (ask for one) or ``none``."""
    return "key" if settings.api_key else "none"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison of ``If-None-Match`` (a list, or ``*``) with ``etag``."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def _answer(request: Request, shipped: ShippedFile, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": shipped.etag}
    if etag_matches(request.headers.get("if-none-match"), shipped.etag):
        return Response(status_code=304, headers=headers)
    return Response(shipped.body, media_type=shipped.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def dashboard_page(request: Request) -> Response:
    """The page; query parameters are ignored (cache busters)."""
    shipped = page(auth_mode(request.app.state.settings))
    return _answer(request, shipped, {**PAGE_HEADERS, "Cache-Control": "no-cache"})


@router.api_route("/dashboard/{name}", methods=["GET", "HEAD"])
async def dashboard_asset(request: Request, name: str) -> Response:
    """One shipped asset by name (nothing else is reachable: no path is ever joined)."""
    shipped = assets().get(name)
    if shipped is None:
        raise NotFound(f"no dashboard file {name[:80]!r}")
    fresh = request.query_params.get("v") == shipped.version
    cache_control = IMMUTABLE if fresh else "no-cache"
    return _answer(
        request, shipped, {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    )
