"""Pieces both stores share: timestamps, counter deltas, JSON fields, argument checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pixelmill.states import ImageStatus

UNFINISHED_IMAGE_STATUSES = (ImageStatus.PENDING, ImageStatus.PROCESSING)

# Which batch counters a final image status adds one to ("pending" loses one each time).
COUNTERS_BY_FINAL_STATUS: dict[ImageStatus, tuple[str, ...]] = {
    ImageStatus.DONE: ("completed",),
    ImageStatus.DUPLICATE: ("completed", "duplicates"),
    ImageStatus.FAILED: ("failed",),
    ImageStatus.CANCELLED: ("cancelled",),
}


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. 2026-05-09T07:35:25.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def require_final(status: ImageStatus) -> ImageStatus:
    """``status`` as an ImageStatus, or ValueError when it is not a final one."""
    status = ImageStatus(status)
    if not status.is_final:
        raise ValueError(f"finish_image needs a final status, not {status.value!r}")
    return status


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def load_json(text: str | None) -> Any:
    return None if text is None or text == "" else json.loads(text)
