"""Status values shared by the engine, the stores, the CLI report and the API."""

from __future__ import annotations

from enum import StrEnum


class ImageStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_IMAGE_STATUSES


FINAL_IMAGE_STATUSES = frozenset(
    {ImageStatus.DONE, ImageStatus.DUPLICATE, ImageStatus.FAILED, ImageStatus.CANCELLED}
)


class BatchStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
