"""Memory: peak RSS of the whole process tree on very large inputs, pixelmill vs the naive loop."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import inputs
from bench.contenders import NAIVE, PIXELMILL, ReportSummary, baseline_argv, pixelmill_argv
from bench.procs import run_timed

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class MemoryScenario:
    name: str
    describe: str
    target_bytes: int
    target_label: str
    make_inputs: Callable[[], Sequence[Path]]


SCENARIOS = (
    MemoryScenario(
        "4x100MP-png",
        "four distinct 10000x10000 PNGs",
        GiB,
        "<= 1 GiB",
        inputs.huge_pngs,
    ),
    MemoryScenario(
        "1x48MP-jpeg",
        "one 8000x6000 JPEG, quality 90",
        300 * 1000 * 1000,
        "<= 300 MB",
        lambda: [inputs.big_jpeg()],
    ),
)


def run_memory(
    workers: int, with_pixelmill: bool, quick: bool = False, log: bool = True
) -> list[dict[str, object]]:
    """Each scenario once per contender, RSS sampled every ~20 ms across the process tree.

    ``quick`` skips the naive loop on the 100 MP PNGs (context only, and the slowest run).
    """
    rows: list[dict[str, object]] = []
    for scenario in SCENARIOS:
        sources = scenario.make_inputs()
        contenders = [PIXELMILL] if with_pixelmill else []
        if not (quick and with_pixelmill and scenario is SCENARIOS[0]):
            contenders.append(NAIVE)
        for name in contenders:
            with tempfile.TemporaryDirectory(prefix="pixelmill-bench-mem-") as scratch:
                out = Path(scratch) / "out"
                report = Path(scratch) / "report.json"
                if name == PIXELMILL:
                    argv = pixelmill_argv(sources, out, workers, report)
                else:
                    argv = baseline_argv(name, sources, out, workers)
                run = run_timed(argv, sample_rss=True)
                summary = ReportSummary.read(report) if name == PIXELMILL else None
                shutil.rmtree(out, ignore_errors=True)
            peak = run.peak_rss_bytes or 0
            row: dict[str, object] = {
                "scenario": scenario.name,
                "inputs": scenario.describe,
                "contender": name,
                "seconds": round(run.seconds, 3),
                "returncode": run.returncode,
                "peak_rss_bytes": peak,
                "peak_rss_mib": round(peak / MiB, 1),
                "target": scenario.target_label if name == PIXELMILL else None,
                "target_bytes": scenario.target_bytes if name == PIXELMILL else None,
                "meets_target": (
                    peak <= scenario.target_bytes
                    and run.returncode == 0
                    and (summary is None or summary.done == len(sources))
                )
                if name == PIXELMILL
                else None,
                "report": summary.as_dict() if summary is not None else None,
            }
            if run.returncode != 0:
                row["stderr_tail"] = run.stderr_tail.strip()[-400:]
            rows.append(row)
            if log:
                print(
                    f"  memory {scenario.name} {name}: peak {peak / MiB:.0f} MiB, "
                    f"{run.seconds:.1f}s, exit {run.returncode}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows
