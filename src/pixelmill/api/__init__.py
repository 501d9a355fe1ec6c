"""The HTTP service: ``create_app(settings)`` for ASGI servers, ``serve()`` for the CLI."""

from pixelmill.api.app import create_app, serve

__all__ = ["create_app", "serve"]
