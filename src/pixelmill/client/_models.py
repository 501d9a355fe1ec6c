"""What the service answers, as frozen models: fields mirror the JSON bodies of docs/api.md.

Unknown fields are ignored, so a newer service that adds fields does not break this client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

FINAL_BATCH_STATUSES = frozenset({"completed", "cancelled"})
FINAL_IMAGE_STATUSES = frozenset({"done", "duplicate", "failed", "cancelled"})


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ErrorInfo(_Body):
    """Why an image failed: a stable ``code`` (``corrupt_image``, ...) and a message."""

    code: str
    message: str


class Rendition(_Body):
    """One rendition file; ``path`` is its URL path on the service."""

    name: str
    format: str
    width: int
    height: int
    bytes: int
    path: str


class Image(_Body):
    """One image of a batch. ``status``: pending, processing, done, duplicate, failed,
    cancelled."""

    image_id: str
    filename: str
    status: str
    sha256: str | None = None
    error: ErrorInfo | None = None
    renditions: tuple[Rendition, ...] = ()
    timings_ms: dict[str, float] | None = None
    declared_type: str | None = None
    detected_type: str | None = None
    placeholder: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in FINAL_IMAGE_STATUSES


class WaitedImage(Image):
    """``create_image(..., wait=True)`` when the image finished in time: its record."""

    batch_id: str


class Batch(_Body):
    """A batch's status. ``status``: queued, processing, completed, cancelled.

    ``images`` is empty where the service sends counts only (lists, events).
    """

    batch_id: str
    status: str
    total: int
    completed: int
    duplicates: int
    failed: int
    cancelled: int
    pending: int
    progress: float
    created_at: datetime
    finished_at: datetime | None = None
    images: tuple[Image, ...] = ()

    @property
    def is_finished(self) -> bool:
        """Completed or cancelled, with no image still pending or running."""
        return self.pending == 0 and self.status in FINAL_BATCH_STATUSES


class BatchAccepted(_Body):
    """``create_batch``: the batch exists and renders in the background."""

    batch_id: str
    status: str
    total: int
    status_url: str
    events_url: str


class ImageAccepted(_Body):
    """``create_image``: accepted; still rendering (or not waited for)."""

    batch_id: str
    image_id: str
    status_url: str


class BatchPage(_Body):
    """One page of ``list_batches``, newest first; ``next_cursor`` None on the last page."""

    batches: tuple[Batch, ...]
    next_cursor: str | None = None


class SourceInfo(_Body):
    """The uploaded image as found: ``width``/``height`` as displayed (after orientation)."""

    format: str
    width: int
    height: int
    bytes: int
    orientation: int | None = None
    mode: str | None = None
    icc: bool | None = None
    frames: int | None = None


class Manifest(_Body):
    """An image's manifest: the source, every rendition made so far, and timings."""

    sha256: str
    source: SourceInfo
    renditions: tuple[Rendition, ...]
    timings_ms: dict[str, float] = {}
    placeholder: str | None = None


class PresetInfo(_Body):
    """One preset of the service's catalogue: its box, fit, and what it renders."""

    name: str
    width: int
    height: int
    fit: str = "inside"
    gravity: str | None = None
    formats: tuple[str, ...] = ()  # the formats it renders
    quality: dict[str, int] = {}  # the encoder quality of each lossy one


class Catalogue(_Body):
    """``GET /v1/presets``: the presets a request may choose from, and the formats."""

    presets: tuple[PresetInfo, ...]
    formats: tuple[str, ...]
    default_formats: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProgressEvent:
    """The batch's counts changed."""

    id: int | None
    batch: Batch


@dataclass(frozen=True)
class ImageEvent:
    """One image finished (done, duplicate, failed or cancelled)."""

    id: int | None
    image: Image


@dataclass(frozen=True)
class DoneEvent:
    """The batch finished: the last event of its stream."""

    id: int | None
    batch: Batch


Event = ProgressEvent | ImageEvent | DoneEvent


def event_from(name: str, event_id: int | None, data: dict[str, Any]) -> Event | None:
    """The typed event for a named SSE message; None for names this client does not know."""
    if name == "image":
        return ImageEvent(event_id, Image.model_validate(data))
    if name == "progress":
        return ProgressEvent(event_id, Batch.model_validate(data))
    if name == "done":
        return DoneEvent(event_id, Batch.model_validate(data))
    return None
