"""The command lines of the contenders, and reading pixelmill's report."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NAIVE = "naive"
FLOOR = "floor"
PIXELMILL = "pixelmill"
PIXELMILL_RERUN = "pixelmill-rerun"

DESCRIPTIONS = {
    NAIVE: "naive sequential loop: 1 process, full decode, LANCZOS from full size per box",
    FLOOR: "bare loop: draft + LANCZOS cascade (reducing_gap=2), ProcessPoolExecutor",
    PIXELMILL: "pixelmill run --workers N, fresh output folder",
    PIXELMILL_RERUN: "pixelmill run again over the same output (every image a duplicate)",
}


def pixelmill_executable() -> str | None:
    """The ``pixelmill`` console script of this interpreter's environment, if installed."""
    beside = Path(sys.executable).parent / "pixelmill"
    if beside.exists():
        return str(beside)
    return shutil.which("pixelmill")


def cli_available() -> bool:
    """True once the CLI's ``run`` command exists (it is written alongside the benchmark)."""
    try:
        import pixelmill.cli  # noqa: F401  (only probing that it imports)
    except ImportError:
        return False
    return pixelmill_executable() is not None


def baseline_argv(kind: str, sources: Sequence[Path], out: Path, workers: int) -> list[str]:
    argv = [sys.executable, "-m", "bench.baselines", kind, str(out), *map(str, sources)]
    return [*argv, "--workers", str(workers)] if kind == FLOOR else argv


def pixelmill_argv(sources: Sequence[Path], out: Path, workers: int, report: Path) -> list[str]:
    executable = pixelmill_executable() or "pixelmill"
    return [
        executable,
        "run",
        *map(str, sources),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
        "--report",
        str(report),
    ]


@dataclass(frozen=True)
class ReportSummary:
    """The counts of a ``pixelmill run --report`` file (empty when there is no report)."""

    total: int = 0
    done: int = 0
    duplicate: int = 0
    failed: int = 0
    cancelled: int = 0
    elapsed_s: float | None = None
    failures: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path) -> ReportSummary:
        try:
            report = json.loads(path.read_text())
            summary = report["summary"]
        except (OSError, ValueError, KeyError, TypeError):
            return cls()
        failures = tuple(
            f"{image.get('source')}: {(image.get('error') or {}).get('code')}"
            for image in report.get("images", [])
            if image.get("status") == "failed"
        )
        return cls(
            total=int(summary.get("total", 0)),
            done=int(summary.get("done", 0)),
            duplicate=int(summary.get("duplicate", 0)),
            failed=int(summary.get("failed", 0)),
            cancelled=int(summary.get("cancelled", 0)),
            elapsed_s=summary.get("elapsed_s"),
            failures=failures,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "done": self.done,
            "duplicate": self.duplicate,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "elapsed_s": self.elapsed_s,
            "failures": list(self.failures),
        }
