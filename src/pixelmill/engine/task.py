"""The task a worker process runs: render one image, store it with its manifest, return a summary.

Module-level and small on both sides of the process boundary: a path, the storage and a spec
in, a ``TaskResult`` (no pixels, no image bytes) out. The local engine's workers and the
distributed engine's workers both run ``run_render_task``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from pixelmill.core.manifest import manifest_dict, render_result_from_manifest, write_manifest
from pixelmill.core.render import render_renditions
from pixelmill.core.specs import RenderResult, RenderSpec, Rendition
from pixelmill.errors import ErrorCode, ImageError
from pixelmill.storage import RENDITIONS_NOT_STORED, Storage, StorageUnavailable

log = logging.getLogger(__name__)

NO_SPACE_MESSAGE = "no space left on device writing renditions"
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class RenderTask:
    job_id: str
    source: str
    sha256: str
    storage: Storage  # picklable: it travels to the worker process with the task
    spec: RenderSpec
    only: frozenset[str] | None  # None: every rendition of the spec
    threads: int = 1  # cores it may use: more than one when it started on an idle engine

    def targets(self) -> frozenset[str]:
        """The file names this task may write (and must remove again if it does not finish)."""
        return self.only if self.only is not None else frozenset(self.spec.rendition_names())


@dataclass(frozen=True)
class TaskResult:
    job_id: str
    result: RenderResult | None
    error_code: ErrorCode | None = None
    error_message: str | None = None


TaskFunction = Callable[[RenderTask], TaskResult]


def _never() -> bool:
    return False


# A worker runs one task at a time; the worker loop points this at "has the engine asked
# this task to stop?" (a message on the worker's pipe) for the task it is running.
_cancel_check: Callable[[], bool] = _never


def set_cancel_check(check: Callable[[], bool] | None) -> None:
    """Install what ``cancel_requested`` asks (the worker loop, per task)."""
    global _cancel_check
    _cancel_check = check or _never


def cancel_requested() -> bool:
    """True once the engine asked the running task to stop (checked between renditions)."""
    return _cancel_check()


# Exceptions the catch-all below lets through after its clean-up: the distributed worker's
# time limit, which ends the image ``timeout`` in the task (no traceback, no internal error).
_passthrough: tuple[type[BaseException], ...] = ()


def set_passthrough(*kinds: type[BaseException]) -> None:
    """Let ``kinds`` out of ``run_render_task`` (the local engine lets nothing out)."""
    global _passthrough
    _passthrough = kinds


def run_render_task(task: RenderTask) -> TaskResult:
    """Render ``task``, then store its renditions and manifest; every failure becomes a
    TaskResult.

    The renditions are written into ``storage.local_dir`` with the manifest (merged with the
    one stored), then ``storage.publish`` makes them visible, the manifest last. A task that
    does not finish leaves the storage as its manifest lists it: the renditions it wrote
    before a cancel or an error are removed, and so are temp and scratch files.
    """
    storage = task.storage
    if cancel_requested():
        return TaskResult(task.job_id, None, ErrorCode.CANCELLED, "cancelled before it started")
    try:
        out_dir = storage.local_dir(task.sha256)
        result = render_renditions(
            task.source,
            out_dir,
            task.spec,
            task.sha256,
            only=task.only,
            should_cancel=cancel_requested,
            threads=task.threads,
        )
        fresh = [r.filename for r in result.renditions]
        result = _merge_with_existing(result, storage, task.spec)
        write_manifest(out_dir, manifest_dict(result))
        storage.publish(task.sha256, out_dir, fresh)
        return TaskResult(task.job_id, result)
    except ImageError as exc:
        failure = TaskResult(task.job_id, None, exc.code, exc.message)
    except StorageUnavailable as exc:
        log.warning("image %s not stored: %s", task.source, exc.message)
        failure = TaskResult(task.job_id, None, ErrorCode.INTERNAL, RENDITIONS_NOT_STORED)
    except OSError as exc:
        failure = TaskResult(task.job_id, None, *describe_os_error(exc, task.source))
    except Exception as exc:  # a bug of ours: that image fails, the run goes on
        if isinstance(exc, _passthrough):
            _discard_unfinished(task)
            raise
        log.exception("internal error rendering %s", task.source)
        failure = TaskResult(task.job_id, None, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    _discard_unfinished(task)
    return failure


def _discard_unfinished(task: RenderTask) -> None:
    """Remove what an unfinished task wrote (its manifest does not list it)."""
    try:
        task.storage.discard_unlisted(task.sha256, task.targets())
    except Exception as exc:  # the storage is down: what it keeps is unlisted, never served
        log.warning("cannot clean up after %s: %s", task.source, exc)


def describe_os_error(exc: OSError, source: str) -> tuple[ErrorCode, str]:
    """The code and message of an OSError while rendering: whose fault it is decides."""
    if exc.errno in _NO_SPACE_ERRNOS:
        return ErrorCode.INSUFFICIENT_STORAGE, NO_SPACE_MESSAGE
    if exc.filename is not None and os.fspath(exc.filename) == source:
        # The source vanished or became unreadable after it was queued.
        return ErrorCode.CORRUPT_IMAGE, f"cannot read the file: {exc.strerror or exc}"
    # The output side: a read-only folder is not the image's fault.
    return ErrorCode.INTERNAL, f"cannot write renditions: {exc}"


def _merge_with_existing(result: RenderResult, storage: Storage, spec: RenderSpec) -> RenderResult:
    """When only missing renditions were rendered, the manifest lists the old ones too
    (those still stored)."""
    existing = storage.read_manifest(result.sha256)
    if existing is None:
        return result
    previous = render_result_from_manifest(existing)
    if previous is None:
        return result
    fresh = {r.filename for r in result.renditions}
    kept = [
        r
        for r in previous.renditions
        if r.filename not in fresh and storage.has_rendition(result.sha256, r.filename)
    ]
    order = {name: i for i, name in enumerate(spec.rendition_names())}
    merged: list[Rendition] = sorted(
        [*kept, *result.renditions], key=lambda r: order.get(r.filename, len(order))
    )
    return replace(result, renditions=tuple(merged))
