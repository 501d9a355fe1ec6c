"""Forgetting a batch and erasing an image's renditions (``DELETE`` on the v1 routes).

The erase rule: stored content is never erased while it is being rendered, as a render
writes its files first and its manifest last, and an erase in between would leave a
manifest listing files already gone. The local engine's renders are known here (started,
outcome not in yet) and none starts while an erase holds the engine's admission lock; the
celery engine's workers render a content only under its claim in the store, which the
erase takes too. An erase that meets a render answers 409 (``invalid_request``): the
client retries once the image is finished. An erase that meets another erase of the same
content waits for it, then answers as it finds the content (404 once erased).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pixelmill.engine.local import LocalEngine
from pixelmill.errors import InvalidRequest, NotFound
from pixelmill.states import ImageStatus
from pixelmill.store import BatchRecord
from pixelmill.store.base import WorkCoordination

if TYPE_CHECKING:
    from pixelmill.api.service import BatchService

# A crashed erase gives the content back to the workers after this.
ERASE_CLAIM_TTL_S = 60.0
ERASE_OWNER_PREFIX = "erase:"
# How long an erase waits for another erase of the same content, and how often it looks.
OTHER_ERASE_WAIT_S = 10.0
OTHER_ERASE_POLL_S = 0.05


class ImageBeingRendered(InvalidRequest):
    """An erase met a render of the same content (409, code invalid_request)."""

    http_status = 409


def delete_batch(service: BatchService, batch_id: str) -> None:
    """Cancel the batch if it runs (no image of it starts after), then forget it.

    Its owed callback is dropped: the batch is gone, so nothing is sent after this (one
    whose sending had begun may still arrive). Spool files of its images go now, or, for
    an image still rendering (or still being sent to the workers), when the engine is done
    with it, as after a cancel.
    """
    record = service.store.get_batch(batch_id)
    if record is None:
        raise NotFound(f"no batch {batch_id!r}")
    if not record.is_finished:
        record = service.cancel_batch(batch_id, send_callback=False)
    if not service.store.delete_batch(batch_id):
        raise NotFound(f"no batch {batch_id!r}")  # another DELETE got there first
    if service.owed is None:
        with contextlib.suppress(OSError):
            (service.outbox / batch_id).unlink()
    _remove_spool_files(service, record)


def _remove_spool_files(service: BatchService, record: BatchRecord) -> None:
    """The spool files of the batch's images that no engine reads any more.

    The local engine only: the celery engine may still be storing a cancelled image's
    original from its spool file (it drops the file once sent, and a worker drops the
    original when it finds the image gone).
    """
    if service.celery is not None:
        return
    for image in record.images:
        if image.spool_path and image.status is not ImageStatus.PROCESSING:
            with contextlib.suppress(OSError):
                Path(image.spool_path).unlink()
    with contextlib.suppress(OSError):
        service.spool_dir(record.batch_id).rmdir()  # only once empty


def delete_image(service: BatchService, sha256: str) -> None:
    """Erase the image's renditions and manifest; 404 when none were stored, 409 while
    the content is being rendered (see the module docstring)."""
    with _no_render_of(service, sha256):
        erased = service.storage.delete_image(sha256)
    if not erased:
        raise NotFound(f"no renditions for {sha256}")


@contextlib.contextmanager
def _no_render_of(service: BatchService, sha256: str) -> Iterator[None]:
    """Held: no render of ``sha256`` runs or starts. ``ImageBeingRendered`` when one runs."""
    busy = f"image {sha256} is being rendered; erase it once its batch is finished"
    if service.celery is not None:
        coordination = cast(WorkCoordination, service.store)
        owner = f"{ERASE_OWNER_PREFIX}{uuid.uuid4().hex}"
        _claim_for_erase(coordination, sha256, owner, busy)
        try:
            yield
        finally:
            coordination.release_claim(sha256, owner)
        return
    engine = service.engine
    assert isinstance(engine, LocalEngine)
    with engine.admission_lock():
        if engine.is_rendering(sha256):
            raise ImageBeingRendered(busy)
        yield


def _claim_for_erase(coordination: WorkCoordination, sha256: str, owner: str, busy: str) -> None:
    """Take the content claim for an erase. Held by a render: ``ImageBeingRendered``. Held
    by another erase: wait for it (up to ``OTHER_ERASE_WAIT_S``), then claim."""
    deadline = time.monotonic() + OTHER_ERASE_WAIT_S
    while not coordination.claim_content(sha256, owner, ERASE_CLAIM_TTL_S):
        holder = coordination.claim_holder(sha256)
        if holder is None:
            continue  # let go in between: claim again
        if not holder.startswith(ERASE_OWNER_PREFIX):
            raise ImageBeingRendered(busy)
        if time.monotonic() > deadline:
            raise ImageBeingRendered(f"image {sha256} is being erased; try again shortly")
        time.sleep(OTHER_ERASE_POLL_S)
