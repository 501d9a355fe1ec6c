"""The batch store contract: batches, their images, exactly-once transitions, change feed.

Two implementations pass one contract suite: ``SqliteBatchStore`` (embedded default) and
``RedisBatchStore``. Methods are synchronous; the API calls them from a thread pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from pixelmill.errors import Unavailable
from pixelmill.states import BatchStatus, ImageStatus


class StoreUnavailable(Unavailable):
    """The store cannot be reached or refuses writes (down, full disk): try again later."""


class InvalidCursor(ValueError):
    """A listing cursor not of the shape ``list_batches`` hands out (the API answers 400)."""


# The error of an image cancelled before it started (the engine's own say the same code).
CANCELLED_ERROR: dict[str, str] = {
    "code": "cancelled",
    "message": "the batch was cancelled before this image started",
}


@dataclass(frozen=True)
class NewImage:
    """An uploaded image, spooled and hashed, about to join a batch."""

    image_id: str
    filename: str
    sha256: str | None  # None when the upload itself failed (too large, not an image)
    spool_path: str | None
    declared_type: str | None = None
    detected_type: str | None = None
    error: dict[str, str] | None = None  # an upload that already failed: {"code", "message"}


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    batch_id: str
    filename: str
    status: ImageStatus
    sha256: str | None
    spool_path: str | None
    declared_type: str | None
    detected_type: str | None
    error: dict[str, str] | None
    renditions: list[dict[str, Any]]
    timings_ms: dict[str, float] | None
    seq: int  # position in the batch, from 0
    # The batch version at which the image became final (0 while unfinished): the order in
    # which images finished, and what an event stream resumes from.
    version: int = 0
    # A ThumbHash (base64) of the upright image, for done and duplicate images.
    placeholder: str | None = None

    def as_api_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "filename": self.filename,
            "status": self.status.value,
            "sha256": self.sha256,
            "error": self.error,
            "renditions": self.renditions,
            "timings_ms": self.timings_ms,
            "declared_type": self.declared_type,
            "detected_type": self.detected_type,
            "placeholder": self.placeholder,
        }


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    status: BatchStatus
    total: int
    completed: int  # done + duplicate
    duplicates: int
    failed: int
    cancelled: int
    pending: int  # pending + processing
    created_at: str  # ISO 8601, UTC
    finished_at: str | None
    callback_url: str | None
    # Increases with every applied transition, past the version of every image it finished.
    version: int
    images: list[ImageRecord] = field(default_factory=list)
    # The request's choice from the catalogue (None: all of it), kept to resume with it.
    presets: tuple[str, ...] | None = None
    formats: tuple[str, ...] | None = None

    @property
    def progress(self) -> float:
        return 1.0 if self.total == 0 else round((self.total - self.pending) / self.total, 4)

    @property
    def is_finished(self) -> bool:
        return self.pending == 0 and self.status in (BatchStatus.COMPLETED, BatchStatus.CANCELLED)

    def as_api_dict(self, include_images: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "batch_id": self.batch_id,
            "status": self.status.value,
            "total": self.total,
            "completed": self.completed,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "pending": self.pending,
            "progress": self.progress,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }
        if include_images:
            body["images"] = [image.as_api_dict() for image in self.images]
        return body


@dataclass(frozen=True)
class Transition:
    """What a state change did: ``applied`` False means it had already happened."""

    applied: bool
    batch_finished: bool = False  # this transition finished the batch (fire the webhook)
    # Images a batch cancel moved from pending to cancelled (they reach no engine callback).
    cancelled_images: int = field(default=0, compare=False)


class BatchStore(Protocol):
    def ping(self) -> bool:
        """True when the store is reachable."""

    def create_batch(
        self,
        batch_id: str,
        images: list[NewImage],
        callback_url: str | None = None,
        *,
        presets: tuple[str, ...] | None = None,
        formats: tuple[str, ...] | None = None,
    ) -> BatchRecord:
        """A new batch; images with ``error`` set start (and count) as failed.

        ``presets``/``formats``: the request's choice from the catalogue (None: all of it).
        """

    def get_batch(self, batch_id: str, include_images: bool = True) -> BatchRecord | None: ...

    def get_image(self, batch_id: str, image_id: str) -> ImageRecord | None: ...

    def mark_processing(self, batch_id: str, image_id: str) -> Transition:
        """pending -> processing (batch queued -> processing). Not applied once final."""

    def finish_image(
        self,
        batch_id: str,
        image_id: str,
        status: ImageStatus,
        *,
        sha256: str | None = None,
        error: dict[str, str] | None = None,
        renditions: list[dict[str, Any]] | None = None,
        timings_ms: dict[str, float] | None = None,
        placeholder: str | None = None,
    ) -> Transition:
        """pending|processing -> a final status, counters updated in the same atomic step.

        Applied at most once per image: a second call (a task that ran twice) changes nothing.
        """

    def cancel_batch(self, batch_id: str) -> tuple[BatchRecord | None, Transition]:
        """Batch -> cancelled; its pending (not processing) images -> cancelled. Idempotent.

        Each image cancelled here gets ``CANCELLED_ERROR`` as its error, like every other
        cancelled image. Once cancelled, a batch ends ``cancelled`` whatever comes next; so
        does a batch that finishes with any image ``cancelled`` (only a cancel cancels one).
        """

    def batch_changes(
        self, batch_id: str, since_version: int
    ) -> tuple[BatchRecord | None, list[ImageRecord]]:
        """The batch (without images) and its images finished after ``since_version``.

        Ordered by ``ImageRecord.version``; one consistent snapshot. Reads only what changed.
        """

    def unfinished_images(self) -> list[ImageRecord]:
        """Every pending or processing image of every batch, oldest batch first (resume)."""

    def wait_for_change(self, batch_id: str, since_version: int, timeout_s: float) -> int:
        """Block until the batch's version exceeds ``since_version`` or the timeout; return it."""

    def close(self) -> None: ...

    def list_batches(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[BatchRecord], str | None]:
        """Up to ``limit`` batches (without images), newest first, after ``cursor``.

        Keyset pagination: the cursor names the last batch of the previous page, so a batch
        created while a client pages never repeats or skips an older one. The second value
        is the cursor of the next page, None after the last. ``InvalidCursor`` for a cursor
        not of that shape.
        """

    def delete_batch(self, batch_id: str) -> bool:
        """Forget the batch: its record, images and change feed. False when it is unknown."""


# A listing cursor: the creation time and id of the last batch of a page. Clients pass it
# back as they got it; any pair of that shape is a position, before which the next page lies.
# [0-9], not \d: \d takes the digits of every script (Arabic-Indic ones too).
CURSOR_PATTERN = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z)_(\S+)"
)


def listing_cursor(batch: BatchRecord) -> str:
    """The cursor of the page after ``batch``: ``<created_at>_<batch_id>``."""
    return f"{batch.created_at}_{batch.batch_id}"


def cursor_position(cursor: str) -> tuple[str, str]:
    """``(created_at, batch_id)`` of a cursor; ``InvalidCursor`` for anything else."""
    match = CURSOR_PATTERN.fullmatch(cursor)
    if match is None:
        raise InvalidCursor(f"not a listing cursor: {cursor[:80]!r}")
    return match.group(1), match.group(2)


class WorkCoordination(Protocol):
    """What the distributed engine's service and workers share beyond batch state.

    Only a shared store (Redis) offers it; the embedded SQLite store does not need to.
    """

    def claim_content(self, sha256: str, owner: str, ttl_s: float) -> bool:
        """Take the right to render ``sha256`` (the same owner may take it again)."""

    def claim_holder(self, sha256: str) -> str | None:
        """Who holds the claim on ``sha256`` now (None: nobody)."""

    def refresh_claim(self, sha256: str, owner: str, ttl_s: float) -> bool:
        """Extend a claim ``owner`` holds; False when it lost it."""

    def release_claim(self, sha256: str, owner: str) -> bool:
        """Drop the claim when ``owner`` still holds it."""

    def start_attempt(self, batch_id: str, image_id: str) -> int:
        """Count one more run of the image (across redeliveries); 0 when it is unknown."""

    def is_batch_cancelled(self, batch_id: str) -> bool: ...

    def hold_original(self, sha256: str, image_id: str) -> bool:
        """Record that ``image_id`` needs ``originals/<sha256>`` until it is final; False while
        the previous last holder deletes it (store it only after ``original_deleted``)."""

    def release_original(self, sha256: str, image_id: str) -> int:
        """``image_id`` no longer needs the original; returns how many images still do (at
        0 the caller deletes it, then calls ``original_deleted``)."""

    def original_deleted(self, sha256: str) -> None:
        """The delete asked for by ``release_original`` is over."""

    def owed_callbacks(self, limit: int = 100) -> list[str]:
        """Batches that finished with a callback_url whose callback is not settled yet."""

    def lease_callback(self, batch_id: str, owner: str, ttl_s: float) -> bool:
        """Take the sending of a callback for ``ttl_s`` (one service sends it at a time)."""

    def release_callback_lease(self, batch_id: str, owner: str) -> None:
        """``owner`` stops sending the callback (a shutdown): another service may send it."""

    def settle_callback(self, batch_id: str) -> None:
        """The callback was delivered or given up: no longer owed."""

    def image_stats(self) -> dict[str, int]:
        """Images that reached each final status since the store began, by status."""
