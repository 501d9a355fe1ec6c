"""The client's one exception, and how HTTP answers and transport failures become it."""

from __future__ import annotations

import json

import httpx

# Codes for failures the service did not describe itself (it always sends its own code in
# ``{"error": {"code", "message"}}``; these cover proxies, dropped connections, timeouts).
NETWORK_ERROR = "network_error"
TIMEOUT = "timeout"
INVALID_RESPONSE = "invalid_response"
_CODE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    413: "file_too_large",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
    507: "insufficient_storage",
}
# Statuses worth asking again for: the service or a proxy in front of it is busy or down.
_TRANSIENT_STATUSES = frozenset({502, 503, 504})


class PixelmillError(Exception):
    """A request failed: ``code`` is the service's stable error code (``not_found``,
    ``unauthorized``, ...) or ``network_error``/``timeout``/``invalid_response`` for
    failures on the way; ``status`` is the HTTP status, None when no answer came."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.message = message
        self.status = status

    @property
    def transient(self) -> bool:
        """True when asking again later may succeed (no answer, or the service busy)."""
        return self.code in (NETWORK_ERROR, TIMEOUT) or self.status in _TRANSIENT_STATUSES

    def __reduce__(self) -> tuple[type[PixelmillError], tuple[str, str, int | None]]:
        return (type(self), (self.code, self.message, self.status))


def error_from_response(response: httpx.Response) -> PixelmillError:
    """The error an answer of 400 or more stands for (its body must have been read)."""
    status = response.status_code
    try:
        detail = json.loads(response.content)["error"]
        code, message = detail["code"], detail["message"]
        if isinstance(code, str) and isinstance(message, str):
            return PixelmillError(code, message, status)
    except (ValueError, KeyError, TypeError):
        pass
    code = _CODE_BY_STATUS.get(status, "internal" if status >= 500 else "invalid_request")
    text = response.text.strip().splitlines()
    reason = text[0][:200] if text else response.reason_phrase or "no body"
    return PixelmillError(code, f"HTTP {status} from {response.request.url.path}: {reason}", status)


def error_from_transport(exc: httpx.TransportError, what: str) -> PixelmillError:
    """A connection that failed, was cut, or went silent past the timeout."""
    code = TIMEOUT if isinstance(exc, httpx.TimeoutException) else NETWORK_ERROR
    detail = str(exc) or type(exc).__name__
    return PixelmillError(code, f"{what}: {detail}")
