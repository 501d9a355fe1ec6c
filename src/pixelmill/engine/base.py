"""The engine contract: submit image jobs, get outcomes back, cancel by batch.

An engine runs core renders somewhere (a local process pool now, a distributed engine
later). Callers see only these types and the ``Engine`` protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pixelmill.core.specs import RenderResult
from pixelmill.errors import ErrorCode
from pixelmill.states import ImageStatus

# A request's choice from the catalogue: preset names and format values (None: all of it).
Choice = tuple[tuple[str, ...] | None, tuple[str, ...] | None]


@dataclass(frozen=True)
class ImageJob:
    """One source file to render. ``sha256`` is of its bytes (the caller hashed them).

    ``presets`` and ``formats`` are the request's choice from the catalogue (names, and
    format values such as ``webp``); None means all of it.
    """

    job_id: str
    source: str
    sha256: str
    batch_id: str = ""
    presets: tuple[str, ...] | None = None
    formats: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ErrorInfo:
    code: ErrorCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


@dataclass(frozen=True)
class ImageOutcome:
    """The final state of one job: done, duplicate, failed or cancelled.

    ``result`` is the image's manifest (every rendition it has) for done and duplicate.
    """

    job: ImageJob
    status: ImageStatus
    result: RenderResult | None = None
    error: ErrorInfo | None = None
    elapsed_s: float = field(default=0.0, compare=False)


OutcomeCallback = Callable[[ImageOutcome], None]
StartCallback = Callable[[ImageJob], None]


class Engine(Protocol):
    """What the service needs of an engine: the local process pool or the celery engine.

    The local engine reports each job's start and outcome through callbacks given to it;
    the celery engine's workers write them to the shared store themselves.
    """

    def start(self) -> object:
        """Begin taking jobs."""

    def submit(self, job: ImageJob) -> None:
        """Queue a job; blocks while the engine cannot take it yet (a full queue, no broker)."""

    def cancel_batch(self, batch_id: str) -> None:
        """No job of the batch starts after this returns; running ones stop between renditions."""

    def shutdown(self, *, cancel_pending: bool = False) -> list[ImageJob]:
        """Stop: running jobs finish; queued jobs are returned unstarted (or cancelled)."""

    def is_alive(self) -> bool:
        """True while the engine can make progress (its dispatcher runs, its broker answers)."""

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""

    @property
    def in_flight(self) -> int:
        """Jobs being rendered now (as far as this process knows)."""
