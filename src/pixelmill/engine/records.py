"""An image outcome as the store records it: shared by the service and the celery workers.

Both write the same fields for the same outcome, so an image reads the same whichever
engine rendered it (renditions as their API paths, the cancelled error on every cancel).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pixelmill.engine.base import ErrorInfo, ImageOutcome
from pixelmill.errors import ErrorCode
from pixelmill.states import ImageStatus
from pixelmill.storage.base import rendition_url

CANCELLED_WHILE_RENDERING = ErrorInfo(ErrorCode.CANCELLED, "the batch was cancelled")


def finish_fields(
    outcome: ImageOutcome, requested: Collection[str] | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``BatchStore.finish_image`` (after the batch and image ids).

    ``requested``: the rendition file names the job asked for (``large.webp``...); the
    record lists only those, while the manifest keeps every rendition the image has.
    """
    job, result = outcome.job, outcome.result
    renditions = None
    if result is not None:
        renditions = [
            {**r.as_dict(), "path": rendition_url(job.sha256, r.filename)}
            for r in result.renditions
            if requested is None or r.filename in requested
        ]
    done = outcome.status is ImageStatus.DONE and result is not None
    error = outcome.error
    if outcome.status is ImageStatus.CANCELLED and error is None:
        error = CANCELLED_WHILE_RENDERING  # every cancelled image says why, however it stopped
    return {
        "status": outcome.status,
        "sha256": job.sha256,
        "error": None if error is None else error.as_dict(),
        "renditions": renditions,
        "timings_ms": result.timings.as_dict() if done and result is not None else None,
        "placeholder": None if result is None else result.placeholder,
    }
