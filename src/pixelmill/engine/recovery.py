"""Crash recovery: what a worker's death, or an exception met on the way, means for one job.

The engine knows which worker held which job, so a death is judged for that job alone:
a timeout (the worker's watchdog said so, or the engine's backstop killed it), a cancel
(the engine killed it at shutdown, or its batch was cancelled), or a crash. A job whose
worker dies under it twice fails ``worker_crashed``; once, it is run again.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass
from enum import Enum

from pixelmill.engine.admission import Entry
from pixelmill.engine.base import ErrorInfo
from pixelmill.engine.pool import Worker
from pixelmill.engine.task import NO_SPACE_MESSAGE, RenderTask
from pixelmill.engine.worker import TIMEOUT_EXIT_STATUS
from pixelmill.errors import ErrorCode, ImageError
from pixelmill.states import ImageStatus
from pixelmill.storage import RENDITIONS_NOT_STORED, StorageUnavailable

CRASHES_ALLOWED = 1  # the second death under the same job is conclusive


class KillReason(Enum):
    TIMEOUT = "timeout"  # past its deadline: the backstop for a worker too stuck to exit
    SHUTDOWN = "shutdown"  # the engine stopped and would not wait any longer


@dataclass(eq=False)
class Running:
    """A job a worker holds."""

    entry: Entry
    worker: Worker
    task: RenderTask
    started: float
    deadline: float  # when the engine kills the worker if its own watchdog did not end it
    cost: int = 0
    killed: KillReason | None = None
    cancel_sent: bool = False


@dataclass(frozen=True)
class Verdict:
    """What to do with a job whose worker died: retry it, or report this outcome."""

    retry: bool
    status: ImageStatus = ImageStatus.FAILED
    error: ErrorInfo | None = None


def judge_death(
    running: Running, exitcode: int | None, *, cancelled: bool, timeout_s: float
) -> Verdict:
    """The verdict on ``running`` after its worker died holding it."""
    if (
        running.killed is KillReason.TIMEOUT
        or running.worker.timed_out
        or exitcode == TIMEOUT_EXIT_STATUS
    ):
        return Verdict(False, ImageStatus.FAILED, ErrorInfo(ErrorCode.TIMEOUT, _late(timeout_s)))
    if running.killed is KillReason.SHUTDOWN or cancelled:
        return Verdict(False, ImageStatus.CANCELLED, ErrorInfo(ErrorCode.CANCELLED, "cancelled"))
    running.entry.strikes += 1
    if running.entry.strikes <= CRASHES_ALLOWED:
        return Verdict(True)
    message = f"the worker process died twice on this image ({describe_exit(exitcode)})"
    return Verdict(False, ImageStatus.FAILED, ErrorInfo(ErrorCode.WORKER_CRASHED, message))


def _late(timeout_s: float) -> str:
    return f"took longer than {timeout_s:g} s"


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def error_for_exception(exc: Exception, source: str) -> ErrorInfo:
    """The error of a job that met ``exc`` in the engine's own process (not in a worker).

    A bad or vanished source is the image's problem, a full disk is ``insufficient_storage``,
    and anything else (an unreadable image folder, a bug of ours) is ``internal``.
    """
    if isinstance(exc, ImageError):
        return ErrorInfo(exc.code, exc.message)
    if isinstance(exc, StorageUnavailable):  # the bucket is down: say so, in one line
        return ErrorInfo(ErrorCode.INTERNAL, RENDITIONS_NOT_STORED)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ErrorInfo(ErrorCode.INSUFFICIENT_STORAGE, NO_SPACE_MESSAGE)
        if exc.filename is not None and os.fspath(exc.filename) == source:
            return ErrorInfo(ErrorCode.CORRUPT_IMAGE, f"cannot read the file: {exc.strerror}")
        return ErrorInfo(ErrorCode.INTERNAL, f"cannot read the image's folder: {exc}")
    return ErrorInfo(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
