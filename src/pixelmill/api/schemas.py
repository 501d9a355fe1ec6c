"""Response shapes, for the OpenAPI docs (routes answer with the store's own dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
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
    status: str
    sha256: str | None
    error: ErrorDetail | None
    renditions: list[RenditionOut]
    timings_ms: dict[str, float] | None
    declared_type: str | None
    detected_type: str | None


class BatchOut(BaseModel):
    batch_id: str
    status: str
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
    status: str
    total: int
    status_url: str
    events_url: str


class ImageAccepted(BaseModel):
    batch_id: str
    image_id: str
    status_url: str


class Health(BaseModel):
    status: str
    store: str
    engine: str
    workers: int
    queued: int
    in_flight: int


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    return {status: {"model": ErrorBody} for status in statuses}
