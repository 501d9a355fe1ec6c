"""The one place where errors become HTTP answers: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pixelmill.errors import HTTP_STATUS, ErrorCode, PixelmillError

log = logging.getLogger(__name__)

# Starlette raises these for routing failures (unknown path, wrong method, ...).
_CODE_BY_HTTP_STATUS: dict[int, ErrorCode] = {
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.FILE_TOO_LARGE,
}


def error_response(
    code: ErrorCode,
    message: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error shape of DESIGN.md, with the status ``HTTP_STATUS`` gives ``code``."""
    return JSONResponse(
        {"error": {"code": code.value, "message": message}},
        status_code=status if status is not None else HTTP_STATUS[code],
        headers=headers,
    )


# The longest id or name an error message repeats; a longer one is cut, with "…".
MAX_ECHOED_CHARS = 80
# The order of the methods an ``Allow`` header lists.
METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def echoed(value: str) -> str:
    """``value`` as an error message quotes it: ``repr``, cut to ``MAX_ECHOED_CHARS``."""
    if len(value) > MAX_ECHOED_CHARS:
        value = value[:MAX_ECHOED_CHARS] + "…"
    return repr(value)


# Seconds a client is asked to wait when the store is down or full (Retry-After on 503).
RETRY_AFTER_S = 2


def close_after_answer(request: Request) -> None:
    """Answer this request with ``Connection: close`` (its body was left unread)."""
    request.state.close_connection = True


# What a client is told when a part is down: where it lives and why is the operator's.
STORAGE_DOWN_MESSAGE = "the storage does not answer; try again later"
STORE_DOWN_MESSAGE = "the store does not answer; try again later"


def public_message(exc: PixelmillError) -> str:
    """``exc``'s message for an API client: a part that is down is named, not located
    (its endpoint, bucket and keys go to the log)."""
    from pixelmill.storage import StorageUnavailable
    from pixelmill.store import StoreUnavailable

    if isinstance(exc, StorageUnavailable):
        return STORAGE_DOWN_MESSAGE
    if isinstance(exc, StoreUnavailable):
        return STORE_DOWN_MESSAGE
    return exc.message


async def _pixelmill_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PixelmillError)
    message = public_message(exc)
    if message != exc.message:  # one line for the operator, no traceback
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.code is ErrorCode.UNAUTHORIZED else {}
    if exc.code is ErrorCode.UNAVAILABLE:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if getattr(request.state, "close_connection", False):
        headers["Connection"] = "close"
    # Some errors answer with a more precise status than their code's (413, 408).
    status = getattr(exc, "http_status", None)
    return error_response(exc.code, message, status=status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for problem in exc.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()))
        if where.startswith("query."):
            where = f"query parameter {where.removeprefix('query.')!r}"
        message = problem.get("msg", "invalid")
        if problem.get("type") == "string_pattern_mismatch":
            message = "is not in the form this API hands out"  # not a regular expression
        problems.append(f"{where}: {message}")
    return error_response(ErrorCode.INVALID_REQUEST, "; ".join(problems) or "invalid request")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on ``request``'s path (RFC 9110's
    ``Allow``): the router names only the methods of the first route whose path matched.
    Each method is tried on every route (included routers too, which nest theirs)."""
    allowed = []
    for method in METHOD_ORDER:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    if exc.status_code >= 500:
        code = ErrorCode.INTERNAL
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
    return error_response(code, str(exc.detail), status=exc.status_code, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug of ours: log the traceback, answer in the same shape as every other error.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ErrorCode.INTERNAL, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error, ours or the framework's, in the JSON error shape."""
    app.add_exception_handler(PixelmillError, _pixelmill_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
