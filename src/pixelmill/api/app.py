"""The FastAPI application: ``create_app(settings)`` for ASGI servers, ``serve()`` for the CLI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from pixelmill import __version__
from pixelmill.api.deps import require_api_key
from pixelmill.api.errors import install_error_handlers
from pixelmill.api.routes import batches, health, images
from pixelmill.api.service import BatchService
from pixelmill.config import Settings, get_settings

log = logging.getLogger(__name__)

# Threads for open event streams, apart from the pool every other route uses.
EVENT_STREAM_THREADS = 64
# Seconds uvicorn waits for open connections (event streams) at shutdown before closing them.
GRACEFUL_SHUTDOWN_S = 10


def create_app(settings: Settings | None = None, *, webhook_backoff_s: float = 1.0) -> FastAPI:
    """The app; its service (store, engine, spool) starts with the lifespan, not here."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = BatchService(settings, webhook_backoff_s=webhook_backoff_s)
        await run_in_threadpool(service.start)
        app.state.service = service
        app.state.sse_limiter = anyio.CapacityLimiter(EVENT_STREAM_THREADS)
        # ?wait=true blocks a thread until the image is done: not on the pool every route uses.
        app.state.wait_limiter = anyio.CapacityLimiter(EVENT_STREAM_THREADS)
        try:
            yield
        finally:
            # SIGTERM lands here via uvicorn: running images finish, queued ones stay pending.
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="pixelmill",
        version=__version__,
        summary="Every rendition of every image: sizes x formats, in parallel.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    needs_key = [Depends(require_api_key)]
    app.include_router(batches.router, dependencies=needs_key)
    app.include_router(images.router, dependencies=needs_key)
    app.include_router(health.router)
    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM (which drain, see the lifespan)."""
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_level="info",
    )
