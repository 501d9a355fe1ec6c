"""A start's look at what the previous run left: unfinished images to queue again (with
their batch's choice of renditions), lost ones to fail, spool files nobody needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pixelmill.engine.base import Choice, ImageJob
from pixelmill.errors import ErrorCode
from pixelmill.states import BatchStatus, ImageStatus

if TYPE_CHECKING:
    from pixelmill.api.service import BatchService

SPOOL_LOST_MESSAGE = "the uploaded file was lost before it was rendered (spool file missing)"


class Resumer:
    """Resumes the service's unfinished images at start (local engine and celery alike)."""

    def __init__(self, service: BatchService) -> None:
        self.service = service
        self._choices: dict[str, Choice] = {}  # each resumed batch's, read once

    def resume(self) -> None:
        """Queue again what a previous run left unfinished; forget spool files of no image."""
        service = self.service
        # Callbacks a previous run owed, listed first: a batch that finishes below (an image
        # whose spool file is lost, a resumed image) records and sends its own, only once.
        owed = sorted(service.outbox.iterdir()) if service.outbox.is_dir() else []
        keep: set[Path] = set()
        seen: set[str] = set()
        for image in service.store.unfinished_images():
            if image.batch_id not in seen:
                seen.add(image.batch_id)
                batch = service.store.get_batch(image.batch_id, include_images=False)
                if batch is not None and batch.status is BatchStatus.CANCELLED:
                    service.engine.cancel_batch(image.batch_id)
            path = Path(image.spool_path) if image.spool_path else None
            if path is not None and not path.is_relative_to(service.spool_root):
                # Spooled by another service sharing this store (Redis): its owner resumes it.
                continue
            if image.sha256 is None or path is None or not path.is_file():
                self.fail(image.batch_id, image.image_id, ErrorCode.INTERNAL, SPOOL_LOST_MESSAGE)
                continue
            if self.resume_job(ImageJob(image.image_id, str(path), image.sha256, image.batch_id)):
                keep.add(path)
        sweep_spool(service.spool_root, keep)
        for marker in owed:
            service._send_callback(marker.name)

    def resume_job(self, job: ImageJob) -> bool:
        """Queue an unfinished image again with its batch's choice of renditions; False when
        the catalogue no longer has that choice (the image fails, saying so)."""
        service = self.service
        if job.batch_id not in self._choices:
            batch = service.store.get_batch(job.batch_id, include_images=False)
            self._choices[job.batch_id] = (
                (None, None) if batch is None else (batch.presets, batch.formats)
            )
        presets, formats = self._choices[job.batch_id]
        job = replace(job, presets=presets, formats=formats)
        try:
            service.chosen.of(job)
        except ValueError as exc:
            message = f"its presets and formats are no longer in the catalogue: {exc}"
            self.fail(job.batch_id, job.job_id, ErrorCode.INVALID_REQUEST, message)
            return False
        service.feed(job)
        return True

    def fail(self, batch_id: str, image_id: str, code: ErrorCode, message: str) -> None:
        """The image cannot be resumed: it fails with ``code`` and ``message``."""
        service = self.service
        error = {"code": code.value, "message": message}
        transition = service.store.finish_image(batch_id, image_id, ImageStatus.FAILED, error=error)
        if transition.applied:
            service.metrics.images.labels(status=ImageStatus.FAILED.value).inc()
        if transition.batch_finished:
            service._schedule_webhook(batch_id)


def sweep_spool(spool_root: Path, keep: set[Path]) -> None:
    """Remove spool files no unfinished image needs (uploads cut short by a crash)."""
    for batch_dir in spool_root.iterdir():
        for path in batch_dir.iterdir() if batch_dir.is_dir() else (batch_dir,):
            if path not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
        with contextlib.suppress(OSError):
            batch_dir.rmdir()
