"""CORS for browser pages on other origins (``PIXELMILL_CORS_ORIGINS``)."""

from __future__ import annotations

from typing import Any


def cors_options(origins: tuple[str, ...]) -> dict[str, Any]:
    """Starlette CORSMiddleware's options for ``origins``: what a browser page may send to
    the API and read back. Preflights are answered by the middleware, without auth."""
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
