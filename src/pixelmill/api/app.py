"""The FastAPI application: ``create_app(settings)`` for ASGI servers, ``serve()`` for the CLI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import h11
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from pixelmill import __version__
from pixelmill.api.cors import JsonErrorCorsMiddleware, cors_options
from pixelmill.api.deps import require_api_key
from pixelmill.api.errors import RETRY_AFTER_S, error_response, install_error_handlers
from pixelmill.api.query_params import refuse_unknown_query_parameters
from pixelmill.api.routes import batches, dashboard, health, images, presets
from pixelmill.api.routes._upload import describe_choice_fields
from pixelmill.api.schemas import finish_openapi
from pixelmill.api.service import BatchService
from pixelmill.api.signing import url_signer
from pixelmill.config import Settings, load_settings
from pixelmill.errors import ErrorCode, PixelmillError

log = logging.getLogger(__name__)

# Where /docs and /redoc find Swagger UI's and ReDoc's files (shipped by fastapi-offline).
DOCS_ASSETS_URL = "/docs/static"
# Threads for open event streams, apart from the pool every other route uses.
EVENT_STREAM_THREADS = 64
# Seconds uvicorn waits for open connections (event streams) at shutdown before closing them.
GRACEFUL_SHUTDOWN_S = 10
# Request line plus headers; more is answered 431 before any of our code runs.
MAX_HEADER_BYTES = 64 * 1024
# After refusing oversized headers, what the client may still send before we hang up.
DISCARD_AFTER_REFUSAL_BYTES = 4 * 1024 * 1024


def create_app(settings: Settings | None = None, *, webhook_backoff_s: float = 1.0) -> FastAPI:
    """The app; its service (store, engine, spool) starts with the lifespan, not here.

    Without ``settings`` (``uvicorn --factory``) they are read from the environment and
    checked, so a bad value is one ConfigError line rather than a pydantic dump.
    """
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            service = BatchService(settings, webhook_backoff_s=webhook_backoff_s)
            await run_in_threadpool(service.start)
        except Exception as exc:
            # An unusable data dir or an unreachable store at start: one line for the
            # operator (see OneLineStartupFailure), not the framework's traceback.
            why = exc.message if isinstance(exc, PixelmillError) else f"{type(exc).__name__}: {exc}"
            app.state.startup_error = f"cannot start: {why}"
            raise
        app.state.service = service
        app.state.sse_limiter = anyio.CapacityLimiter(EVENT_STREAM_THREADS)
        # ?wait=true blocks a thread until the image is done: not on the pool every route uses.
        app.state.wait_limiter = anyio.CapacityLimiter(EVENT_STREAM_THREADS)
        try:
            yield
        finally:
            # SIGTERM lands here via uvicorn: running images finish, queued ones stay pending.
            await run_in_threadpool(service.stop)

    # /docs and /redoc load their scripts and styles from the service itself, not a CDN.
    app = FastAPIOffline(
        title="pixelmill",
        version=__version__,
        summary="Every rendition of every image: sizes x formats, in parallel.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS_URL,
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
    )
    app.state.settings = settings
    app.state.url_signer = url_signer(settings)
    if settings.cors_origin_list:
        app.add_middleware(JsonErrorCorsMiddleware, **cors_options(settings.cors_origin_list))
    install_error_handlers(app)
    # The key first: a caller without it learns nothing, not even a route's parameters.
    checked_query = Depends(refuse_unknown_query_parameters)
    needs_key = [Depends(require_api_key), checked_query]
    app.include_router(batches.router, dependencies=needs_key)
    app.include_router(images.router, dependencies=needs_key)
    app.include_router(presets.router, dependencies=needs_key)
    app.include_router(health.router, dependencies=[checked_query])
    # The page's own files: no key (they hold no data) and cache busters in the query.
    app.include_router(dashboard.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = finish_openapi(get_openapi_document(app))
            app.openapi_schema = describe_choice_fields(document, settings.render_spec())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def get_openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's own document for ``app`` (before ``finish_openapi``)."""
    return get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )


def header_deadline_protocol(
    timeout_s: float, max_connections: int | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, plus a deadline and a size cap for each request's headers,
    and a cap on open connections answered in our JSON error shape.

    uvicorn only times out idle kept-alive connections: a client that connects and sends
    nothing, or half its headers, would hold its socket forever; and h11 checks its header
    limit only on what is still incomplete after a read. (The body is timed by the upload
    reader, chunk by chunk.) uvicorn's own cap answers in plain text, without Retry-After.
    """

    class HeaderDeadlineH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _discard_budget: int | None = None  # set once refused: bytes still read and dropped

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if max_connections is not None:
                self.app = self._capped(self.app, max_connections)

        def _capped(self, app: Any, cap: int) -> Any:
            """``app``, unless more than ``cap`` connections (or requests) are open now."""

            async def capped_app(scope: Any, receive: Any, send: Any) -> None:
                # Both sets include this connection and this request.
                if len(self.connections) > cap or len(self.tasks) > cap:
                    log.warning("more connections open than the cap of %d: answering 503", cap)
                    response = error_response(
                        ErrorCode.UNAVAILABLE,
                        f"the service is at its cap of {cap} open connections; retry shortly",
                        headers={"Retry-After": str(RETRY_AFTER_S), "Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
                await app(scope, receive, send)

            return capped_app

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            if self._discard_budget is not None:
                self._discard(len(data))
                return
            if self.conn.their_state is h11.IDLE:
                end = data.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end
                if self._head_bytes > MAX_HEADER_BYTES:
                    self._refuse_headers()
                    return
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm_header_timer()  # a request has begun (or may): its headers are due
            else:
                self._head_bytes = 0
                self._disarm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _refuse_headers(self) -> None:
            """Answer 431, then read and drop what the client still sends, up to a bound:
            closing at once would reset the connection before the client read the answer."""
            log.info("refusing a request whose headers are over %d bytes", MAX_HEADER_BYTES)
            body = b'{"error":{"code":"invalid_request","message":"request headers too large"}}'
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._discard_budget = DISCARD_AFTER_REFUSAL_BYTES
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(timeout_s, self.transport.close)

        def _discard(self, count: int) -> None:
            assert self._discard_budget is not None
            self._discard_budget -= count
            if self._discard_budget < 0:
                self.transport.close()

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing a connection whose request headers did not arrive in time")
                self.transport.close()

    return HeaderDeadlineH11Protocol


class OneLineStartupFailure:
    """ASGI wrapper: a failed start is logged as the lifespan's one-line reason.

    Starlette reports a failed lifespan start with the whole traceback, which uvicorn logs.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Any) -> None:
            reason = getattr(self.app.state, "startup_error", None)
            if message.get("type") == "lifespan.startup.failed" and reason:
                message = {**message, "message": reason}
            await send(message)

        await self.app(scope, receive, send_one_line)


def uvicorn_config(
    app: FastAPI, settings: Settings, host: str, port: int, *, log_level: str = "info"
) -> uvicorn.Config:
    """The one uvicorn configuration: ``pixelmill serve`` and the tests run the same server.

    Bounds what a client can hold: a deadline for headers (and, in the upload reader, for
    each body chunk), a cap on open connections (more are answered 503) and on header bytes.
    """
    return uvicorn.Config(
        OneLineStartupFailure(app),
        host=host,
        port=port,
        # The connection cap is the protocol's (a JSON 503 with Retry-After), not uvicorn's.
        http=header_deadline_protocol(settings.client_timeout_s, settings.max_connections),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_level=log_level,
    )


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM (which drain, see the lifespan)."""
    uvicorn.Server(uvicorn_config(create_app(settings), settings, host, port)).run()
