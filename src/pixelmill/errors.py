"""pixelmill's exceptions: one root, every error carries a stable ``code``.

    PixelmillError                  code
    ├── ImageError                  (an image could not be rendered; per-image, never fatal)
    │   ├── UnsupportedFormat       unsupported_format
    │   ├── CorruptImage            corrupt_image
    │   ├── TooManyPixels           too_many_pixels
    │   ├── FileTooLarge            file_too_large
    │   ├── ImageTimeout            timeout
    │   ├── WorkerCrashed           worker_crashed
    │   └── Cancelled               cancelled
    ├── NotFound                    not_found
    ├── InvalidRequest              invalid_request
    ├── Unauthorized                unauthorized
    ├── InsufficientStorage         insufficient_storage (the data dir is full)
    ├── Unavailable                 unavailable (the store is down: try again shortly)
    └── InternalError               internal

The codes are the contract of DESIGN.md; the HTTP status of each lives in ``HTTP_STATUS``.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    FILE_TOO_LARGE = "file_too_large"
    TIMEOUT = "timeout"
    WORKER_CRASHED = "worker_crashed"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class PixelmillError(Exception):
    """Root of every pixelmill error; ``code`` is stable, ``message`` is for people."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[PixelmillError], tuple[str]]:
        return (type(self), (self.message,))


class ImageError(PixelmillError):
    """An image could not be rendered. Fails that image only."""


class UnsupportedFormat(ImageError):
    code = ErrorCode.UNSUPPORTED_FORMAT


class CorruptImage(ImageError):
    code = ErrorCode.CORRUPT_IMAGE


class TooManyPixels(ImageError):
    code = ErrorCode.TOO_MANY_PIXELS


class FileTooLarge(ImageError):
    code = ErrorCode.FILE_TOO_LARGE


class ImageTimeout(ImageError):
    code = ErrorCode.TIMEOUT


class WorkerCrashed(ImageError):
    code = ErrorCode.WORKER_CRASHED


class Cancelled(ImageError):
    code = ErrorCode.CANCELLED


class NotFound(PixelmillError):
    code = ErrorCode.NOT_FOUND


class InvalidRequest(PixelmillError):
    code = ErrorCode.INVALID_REQUEST


class Unauthorized(PixelmillError):
    code = ErrorCode.UNAUTHORIZED


class InsufficientStorage(PixelmillError):
    """No space left where uploads, renditions or the store are written."""

    code = ErrorCode.INSUFFICIENT_STORAGE


class Unavailable(PixelmillError):
    """A part the service needs (the batch store) is down or refuses writes for now."""

    code = ErrorCode.UNAVAILABLE


class InternalError(PixelmillError):
    code = ErrorCode.INTERNAL


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNSUPPORTED_FORMAT: 415,
    ErrorCode.CORRUPT_IMAGE: 422,
    ErrorCode.TOO_MANY_PIXELS: 422,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.TIMEOUT: 422,
    ErrorCode.WORKER_CRASHED: 422,
    ErrorCode.CANCELLED: 409,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
