"""Response shapes and the finishing touches that make ``/openapi.json`` exact.

Routes answer with the store's own dicts; these models describe them for the docs and for
schema-driven tests, so every field here is what the service really sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pixelmill.errors import ErrorCode
from pixelmill.states import BatchStatus, ImageStatus


class ErrorDetail(BaseModel):
    code: ErrorCode
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class RenditionOut(BaseModel):
    name: str
    format: str
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


class BatchOut(BaseModel):
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
    images: list[ImageOut] = []


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


class PresetOut(BaseModel):
    name: str
    width: int
    height: int
    fit: str  # inside or cover
    gravity: str | None  # cover only: center, attention or entropy
    formats: list[str] | None  # None: default_formats
    quality: dict[str, int]  # per format, where the preset sets one


class PresetsOut(BaseModel):
    """``GET /v1/presets``: what an upload's ``presets`` and ``formats`` choose from."""

    presets: list[PresetOut]
    formats: list[str]  # every format a request may ask for
    default_formats: list[str]  # a preset's formats when it sets none


class Health(BaseModel):
    status: str
    store: str
    storage: str = "ok"  # ok or unreachable (a bucket is checked in the background)
    engine: str
    engine_kind: str = "local"  # local or celery
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


# Short, stable operation ids (DESIGN.md), whatever the handlers are called.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("post", "/v1/batches"): "create_batch",
    ("get", "/v1/batches/{batch_id}"): "get_batch",
    ("get", "/v1/batches/{batch_id}/events"): "batch_events",
    ("post", "/v1/batches/{batch_id}/cancel"): "cancel_batch",
    ("post", "/v1/images"): "create_image",
    ("get", "/v1/images/{sha256}"): "get_manifest",
    ("get", "/v1/images/{sha256}/{filename}"): "get_rendition",
    ("get", "/v1/presets"): "list_presets",
    ("get", "/healthz"): "healthz",
    ("get", "/metrics"): "metrics",
}
BEARER_SCHEME = "bearer"
# The shape of the ids in paths; anything else names nothing (404, like an unknown id).
PATH_PATTERNS: dict[str, str] = {
    "batch_id": "^[0-9a-f]{32}$",
    "sha256": "^[0-9a-f]{64}$",
    "filename": "^[A-Za-z0-9_]{1,64}\\.(jpg|webp|avif|png)$",
}


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Make FastAPI's document exact: 400 (our error shape) instead of its 422, operation
    ids, and bearer auth as a security scheme on ``/v1``."""
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                # Only parameters FastAPI validates produce it: they are our 400s.
                responses["400"] = {
                    "description": ERROR_MEANINGS[400],
                    "content": {"application/json": {"schema": error_ref}},
                }
            for parameter in operation.get("parameters", []):
                pattern = PATH_PATTERNS.get(parameter.get("name", ""))
                if parameter.get("in") == "path" and pattern:
                    parameter.setdefault("schema", {})["pattern"] = pattern
            operation["operationId"] = OPERATION_IDS.get(
                (method, path), operation.get("operationId")
            )
            if path.startswith("/v1/"):
                operation["security"] = [{BEARER_SCHEME: []}, {}]
    components = schema.setdefault("components", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(unused, None)
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "PIXELMILL_API_KEY, when set; without it /v1 needs no key.",
    }
    return schema
