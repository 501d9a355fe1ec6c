"""Response shapes and the finishing touches that make ``/openapi.json`` exact.

Routes answer with the store's own dicts; these models describe them for the docs and for
schema-driven tests, so every field here is what the service really sends.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from pixelmill.core.specs import Fit, Gravity, OutputFormat
from pixelmill.errors import ErrorCode
from pixelmill.states import BatchStatus, ImageStatus


class ErrorDetail(BaseModel):
    code: ErrorCode
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class RenditionOut(BaseModel):
    name: str
    format: OutputFormat
    width: int
    height: int
    bytes: int
    path: str  # the rendition's URL path, /v1/images/{sha256}/{preset}.{ext}


class ImageOut(BaseModel):
    image_id: str
    filename: str
    status: ImageStatus
    sha256: str | None
    error: ErrorDetail | None
    renditions: list[RenditionOut]
    timings_ms: dict[str, float] | None
    declared_type: str | None
    detected_type: str | None
    placeholder: str | None = None  # ThumbHash (base64) of done and duplicate images


class ImageWaited(ImageOut):
    """``POST /v1/images?wait=true``: the finished image's record, with its batch."""

    batch_id: str


class BatchSummary(BaseModel):
    """A batch's status without its images (what the listing shows of each)."""

    batch_id: str
    status: BatchStatus
    total: int
    completed: int
    duplicates: int
    failed: int
    cancelled: int
    pending: int
    progress: float
    created_at: str
    finished_at: str | None


class BatchOut(BatchSummary):
    images: list[ImageOut] = []


class BatchList(BaseModel):
    """``GET /v1/batches``: a page, newest first; ``next_cursor`` is null on the last."""

    batches: list[BatchSummary]
    next_cursor: str | None


class BatchAccepted(BaseModel):
    batch_id: str
    status: BatchStatus
    total: int
    status_url: str
    events_url: str


class ImageAccepted(BaseModel):
    batch_id: str
    image_id: str
    status_url: str


class SourceOut(BaseModel):
    """What the original is: its format and displayed size (after EXIF orientation)."""

    format: str
    width: int
    height: int
    bytes: int
    orientation: int
    mode: str
    icc: bool
    frames: int | None  # None: an animation whose frames were not counted


class TimingsOut(BaseModel):
    read: float
    decode: float
    resize: float
    encode: float
    total: float


class Manifest(BaseModel):
    """``GET /v1/images/{sha256}``: every rendition of an image, its source and timings."""

    sha256: str
    manifest_version: int
    source: SourceOut
    # A ThumbHash (base64) of the upright image; absent from manifests written without one.
    placeholder: str | None = None
    renditions: list[RenditionOut]
    timings_ms: TimingsOut


class PresetOut(BaseModel):
    name: str
    width: int
    height: int
    fit: Fit
    gravity: Gravity | None  # cover only (null with fit inside)
    formats: list[OutputFormat]  # what the preset renders (its own, else default_formats)
    quality: dict[str, int]  # the encoder quality of each lossy format it renders


class PresetsOut(BaseModel):
    """``GET /v1/presets``: what an upload's ``presets`` and ``formats`` choose from."""

    presets: list[PresetOut]
    formats: list[str]  # every format a request may ask for
    default_formats: list[str]  # a preset's formats when it sets none


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    store: Literal["ok", "unreachable", "failing"]
    # A bucket is checked in the background.
    storage: Literal["ok", "unreachable"] = "ok"
    engine: Literal["ok", "stopped", "unreachable"]
    engine_kind: Literal["local", "celery"] = "local"
    workers: int | None  # celery: workers answering a ping (None when unknown)
    queued: int
    in_flight: int
    unwritten_outcomes: int = 0  # image outcomes waiting for the store to take them
    unsent: int = 0  # celery: images received that the broker does not have yet
    reason: str | None = None  # why the status is not ok


ERROR_MEANINGS: dict[int, str] = {
    400: "Invalid request (code invalid_request)",
    401: "Missing or wrong API key, when one is set (code unauthorized)",
    404: "No such batch or image (code not_found)",
    408: "The client stopped sending the body (code invalid_request)",
    409: "The image is being rendered: erase it once it is finished (code invalid_request)",
    416: "Range outside the file (code invalid_request)",
    413: "Body over PIXELMILL_MAX_BATCH_BYTES (file_too_large) or more files than "
    "PIXELMILL_MAX_FILES_PER_BATCH (invalid_request)",
    503: "The batch store or the storage is down (or the store full) for now; retry after "
    "Retry-After (code unavailable)",
    507: "No space left to store the upload (code insufficient_storage)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, with the JSON error body."""
    return {
        status: {"model": ErrorBody, "description": ERROR_MEANINGS.get(status, "Error")}
        for status in statuses
    }


_IMAGE_BYTES = {
    media_type: {"schema": {"type": "string", "format": "binary"}}
    for media_type in (f.media_type for f in OutputFormat)
}
MANIFEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The manifest (ETag, Cache-Control: no-cache)"},
    304: {"description": "Not modified (If-None-Match)"},
    **error_responses(401, 404, 503),
}
RENDITION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The rendition's bytes (ETag, immutable)", "content": _IMAGE_BYTES},
    206: {
        "description": "The requested byte range; several ranges as multipart/byteranges",
        "content": {**_IMAGE_BYTES, "multipart/byteranges": {"schema": {"type": "string"}}},
    },
    304: {"description": "Not modified (If-None-Match)"},
    307: {"description": "Served elsewhere (PIXELMILL_STORAGE_PUBLIC_URL): see Location"},
    **error_responses(400, 401, 404, 416, 503),
}


# Short, stable operation ids (DESIGN.md), whatever the handlers are called.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("post", "/v1/batches"): "create_batch",
    ("get", "/v1/batches/{batch_id}"): "get_batch",
    ("get", "/v1/batches/{batch_id}/events"): "batch_events",
    ("post", "/v1/batches/{batch_id}/cancel"): "cancel_batch",
    ("get", "/v1/batches"): "list_batches",
    ("delete", "/v1/batches/{batch_id}"): "delete_batch",
    ("delete", "/v1/images/{sha256}"): "delete_image",
    ("post", "/v1/images"): "create_image",
    ("get", "/v1/images/{sha256}"): "get_manifest",
    ("head", "/v1/images/{sha256}"): "head_manifest",
    ("get", "/v1/images/{sha256}/{filename}"): "get_rendition",
    ("head", "/v1/images/{sha256}/{filename}"): "head_rendition",
    ("get", "/v1/presets"): "list_presets",
    ("get", "/healthz"): "healthz",
    ("get", "/metrics"): "metrics",
}
# Operations that ignore query parameters they do not know: cache-busting strings work on
# manifests and renditions, and scrapers may add their own to /metrics. Every other
# operation refuses them (400, see query_params.py).
LENIENT_QUERY_OPERATIONS = frozenset(
    {"get_manifest", "head_manifest", "get_rendition", "head_rendition", "metrics"}
)
BEARER_SCHEME = "bearer"
# The shape of the ids in paths; anything else names nothing (404, like an unknown id).
PATH_PATTERNS: dict[str, str] = {
    "batch_id": "^[0-9a-f]{32}$",
    "sha256": "^[0-9a-f]{64}$",
    "filename": "^[A-Za-z0-9_]{1,64}\\.(jpg|webp|avif|png)$",
}
# Request headers FastAPI cannot see (the routes read them from the request).
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "An ETag from an earlier answer: 304 when it still matches.",
}
_RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "bytes=START-END (several ranges: multipart/byteranges). Malformed: 400; "
    "outside the file: 416.",
}
# A signed URL (docs/api.md) authorises a GET or HEAD of its path without a header: every
# such operation of /v1 takes these two, both or neither.
SIGNED_URL_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "expires",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
        "description": "Signed URL: Unix time (seconds) after which it is refused (401).",
    },
    {
        "name": "sig",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "description": 'Signed URL: hex HMAC-SHA256 of "<path>?expires=<expires>".',
    },
]
SIGNED_URL_METHODS = ("get", "head")
BEARER_DESCRIPTION = (
    "PIXELMILL_API_KEY, when set; without it /v1 needs no key. A GET or HEAD may instead "
    "carry a signed URL's `expires` and `sig` query parameters (the URLs answers hand out "
    "are signed; see docs/api.md)."
)
HEADER_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "get_manifest": [_IF_NONE_MATCH],
    "head_manifest": [_IF_NONE_MATCH],
    "get_rendition": [_IF_NONE_MATCH, _RANGE],
    "head_rendition": [_IF_NONE_MATCH, _RANGE],
}

EVENT_STREAM_DESCRIPTION = """\
Server-Sent Events until the batch is finished, then the server closes the stream.

Every event has an increasing `id:`; reconnecting with `Last-Event-ID` resumes after that
event. The stream opens with a `retry:` hint; comment lines (`: keep-alive`) may come between
events. Each `data:` line is one JSON object:

- `event: image`: the finished image's record (`ImageOut`), once per image.
- `event: progress`: the batch's status without `images` (`BatchOut`), when its counts change.
- `event: done`: the final status without `images` (`BatchOut`); the stream ends after it.
- `event: error`: `{"code": "not_found", "message": ...}` (`ErrorDetail`) when the batch is
  deleted or expires while watched; the stream ends after it.
"""
# The same, for programs: one event, its ``data`` a JSON text of the schema its name gives
# (the event-stream convention of OpenAPI 3.2, written as 3.1's ``schema`` of one event).
EVENT_DATA_MODELS = {
    "image": "ImageOut",
    "progress": "BatchOut",
    "done": "BatchOut",
    "error": "ErrorDetail",
}
SERVER_SENT_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": list(EVENT_DATA_MODELS)},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string"},
    },
    "oneOf": [
        {
            "properties": {
                "event": {"const": event},
                "data": {
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": f"#/components/schemas/{model}"},
                },
            }
        }
        for event, model in EVENT_DATA_MODELS.items()
    ],
}


def event_stream_response() -> dict[int | str, dict[str, Any]]:
    """The 200 answer of ``GET /v1/batches/{batch_id}/events``."""
    return {
        200: {
            "description": EVENT_STREAM_DESCRIPTION,
            "content": {"text/event-stream": {"schema": SERVER_SENT_EVENT}},
        }
    }


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Make FastAPI's document exact: 400 (our error shape) instead of its 422 wherever the
    service refuses a request, operation ids, request headers the routes read, no bodies on
    HEAD, bearer auth as a security scheme on ``/v1`` and signed URLs' query parameters."""
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            operation_id = OPERATION_IDS.get((method, path), operation.get("operationId"))
            operation["operationId"] = operation_id
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            # Unknown query parameters are 400 on every operation but the lenient ones; a
            # malformed signed URL's parameter is 400 wherever they are taken.
            takes_signed_urls = path.startswith("/v1/") and method in SIGNED_URL_METHODS
            refuses = operation_id not in LENIENT_QUERY_OPERATIONS or takes_signed_urls
            if refuses and "400" not in responses:
                responses["400"] = {
                    "description": ERROR_MEANINGS[400],
                    "content": {"application/json": {"schema": error_ref}},
                }
            if method == "head":
                for response in responses.values():
                    response.pop("content", None)
            parameters: list[dict[str, Any]] = operation.get("parameters", [])
            for parameter in parameters:
                pattern = PATH_PATTERNS.get(parameter.get("name", ""))
                if parameter.get("in") == "path" and pattern:
                    parameter.setdefault("schema", {})["pattern"] = pattern
            if operation_id in HEADER_PARAMETERS:
                parameters = parameters + HEADER_PARAMETERS[operation_id]
            if takes_signed_urls:
                parameters = parameters + SIGNED_URL_PARAMETERS
            if parameters:
                operation["parameters"] = parameters
            if path.startswith("/v1/"):
                operation["security"] = [{BEARER_SCHEME: []}, {}]
    components = schema.setdefault("components", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(unused, None)
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": BEARER_DESCRIPTION,
    }
    return schema
