"""CORS for browser pages on other origins (``PIXELMILL_CORS_ORIGINS``)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from pixelmill.api.errors import error_response
from pixelmill.errors import ErrorCode


class JsonErrorCorsMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, refusing a preflight in the API's JSON error shape
    (Starlette answers it in plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        reason = bytes(response.body).decode("latin-1")  # "Disallowed CORS origin, headers"
        kept = {
            name: value
            for name, value in response.headers.items()
            if name.startswith("access-control-") or name == "vary"
        }
        return error_response(
            ErrorCode.INVALID_REQUEST,
            f"preflight refused: {reason.removeprefix('Disallowed CORS ')} not allowed",
            status=response.status_code,
            headers=kept,
        )


def cors_options(origins: tuple[str, ...]) -> dict[str, Any]:
    """The middleware's options for ``origins``: what a browser page may send to the API
    and read back. Preflights are answered by the middleware, without auth."""
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
        "allow_headers": [
            "Authorization",
            "Content-Type",
            "Last-Event-ID",
            "Range",
            "If-None-Match",
        ],
        "expose_headers": [
            "ETag",
            "Content-Range",
            "Content-Length",
            "Accept-Ranges",
            "Retry-After",
        ],
        # Browsers cache a preflight for this long (seconds).
        "max_age": 600,
    }
