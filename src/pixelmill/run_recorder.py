"""What ``pixelmill run`` counts and reports: the summary line's numbers and the report's
entries, collected from outcomes as they arrive (from the engine's threads)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from pixelmill.engine.base import ImageOutcome
from pixelmill.states import ImageStatus

SKIPPED = "skipped"  # a run-only status: a non-image in a folder walk (no batch ever has one)


class RunRecorder:
    """Collects outcomes (thread-safe): counts for the summary, entries for the report."""

    def __init__(
        self,
        out_arg: str,
        keep_entries: bool,
        folder_of: Callable[[ImageOutcome], str] | None = None,
    ) -> None:
        self.out_arg = out_arg
        self.keep_entries = keep_entries
        self.folder_of = folder_of  # where an image's renditions are, when not content-addressed
        self.entries: list[tuple[int, dict[str, Any]]] = []
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.stage_ms: dict[str, float] = dict.fromkeys(
            ("read", "decode", "resize", "encode", "total"), 0.0
        )
        self.rendered = 0
        self._lock = threading.Lock()

    def record(self, outcome: ImageOutcome) -> None:
        with self._lock:
            self.statuses[outcome.status.value] += 1
            if outcome.error is not None and outcome.status is ImageStatus.FAILED:
                self.failures[outcome.error.code.value] += 1
            if outcome.status is ImageStatus.DONE and outcome.result is not None:
                self.rendered += 1
                for stage, ms in outcome.result.timings.as_dict().items():
                    self.stage_ms[stage] += ms
            if self.keep_entries:
                self.entries.append((int(outcome.job.job_id), self._entry(outcome)))

    def record_skipped(self, index: int, path: str) -> None:
        """A file a folder walk found that is not an image: counted, never a failure."""
        with self._lock:
            self.statuses[SKIPPED] += 1
            if self.keep_entries:
                entry: dict[str, Any] = {
                    "source": path,
                    "status": SKIPPED,
                    "sha256": None,
                    "error": None,
                    "renditions": [],
                    "placeholder": None,
                }
                self.entries.append((index, entry))

    def _entry(self, outcome: ImageOutcome) -> dict[str, Any]:
        sha = outcome.job.sha256 or None
        renditions = []
        if outcome.result is not None and sha:
            folder = (
                self.folder_of(outcome)
                if self.folder_of is not None
                else os.path.join(self.out_arg, "renditions", sha[:2], sha)
            )
            renditions = [
                {**r.as_dict(), "path": os.path.join(folder, r.filename)}
                for r in outcome.result.renditions
            ]
        return {
            "source": outcome.job.source,
            "status": outcome.status.value,
            "sha256": sha,
            "error": outcome.error.as_dict() if outcome.error else None,
            "renditions": renditions,
            "placeholder": outcome.result.placeholder if outcome.result is not None else None,
        }

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.statuses["done"],
            "duplicate": self.statuses["duplicate"],
            "failed": self.statuses["failed"],
            "cancelled": self.statuses["cancelled"],
            "skipped": self.statuses[SKIPPED],
            "elapsed_s": round(elapsed_s, 3),
        }

    def report(self, elapsed_s: float) -> dict[str, Any]:
        images = [entry for _, entry in sorted(self.entries, key=lambda pair: pair[0])]
        return {"summary": self.summary(elapsed_s), "images": images}
