"""Speed: the contenders run alternately (A B C A B C ...) on the same photos; medians win.

Each run writes into a fresh temporary folder, so pixelmill never finds a duplicate except in
the deliberate re-run, which goes over the folder its fresh run of the same round just made.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.contenders import (
    FLOOR,
    NAIVE,
    PIXELMILL,
    PIXELMILL_RERUN,
    ReportSummary,
    baseline_argv,
    pixelmill_argv,
)
from bench.procs import RunResult, run_timed, wait_for_quiet

# A run during which other work kept this many cores busy or more is "noisy"; on a 2-core
# machine that is enough to stretch a 2-worker contender's wall time visibly.
NOISE_LIMIT_CORES = 0.3
MIN_CLEAN_RUNS = 1  # a quiet run beats a median that includes noisy ones


@dataclass
class ContenderRuns:
    """Every timed run of one contender."""

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    others_cores: list[float] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    reports: list[ReportSummary] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def valid_seconds(self) -> list[float]:
        """Wall times of the runs that did the whole job (see ``_record``)."""
        return [s for s, ok in zip(self.seconds, self.valid, strict=True) if ok]

    @property
    def median(self) -> float | None:
        valid = self.valid_seconds
        return statistics.median(valid) if valid else None

    @property
    def clean_seconds(self) -> list[float]:
        """Wall times of the valid runs the rest of the machine left (nearly) alone."""
        runs = zip(self.seconds, self.others_cores, self.valid, strict=True)
        return [s for s, others, ok in runs if ok and others < NOISE_LIMIT_CORES]

    @property
    def clean_median(self) -> float | None:
        clean = self.clean_seconds
        return statistics.median(clean) if len(clean) >= MIN_CLEAN_RUNS else None

    @property
    def median_cpu(self) -> float | None:
        valid = [c for c, ok in zip(self.cpu_seconds, self.valid, strict=True) if ok]
        return statistics.median(valid) if valid else None

    def as_dict(self) -> dict[str, object]:
        return {
            "runs": len(self.valid_seconds),
            "invalid_runs": len(self.seconds) - len(self.valid_seconds),
            "seconds": [round(s, 4) for s in self.seconds],
            "valid": self.valid,
            "median_s": _round(self.median),
            "min_s": _round(min(self.valid_seconds, default=None)),
            "max_s": _round(max(self.valid_seconds, default=None)),
            "cpu_s": [round(s, 3) for s in self.cpu_seconds],
            "median_cpu_s": _round(self.median_cpu),
            "clean_runs": len(self.clean_seconds),
            "clean_median_s": _round(self.clean_median),
            "others_cores": [round(s, 2) for s in self.others_cores],
            "median_others_cores": _round(
                statistics.median(self.others_cores) if self.others_cores else None
            ),
            "last_report": self.reports[-1].as_dict() if self.reports else None,
            "errors": self.errors,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class SpeedConfig:
    sources: Sequence[Path]
    rounds: int
    workers: int
    with_pixelmill: bool
    warmup: bool = True
    quiet_wait_s: float = 10.0  # at most this long before each run; 0 starts at once


def run_speed(config: SpeedConfig, log: bool = True) -> dict[str, ContenderRuns]:
    """Run ``config.rounds`` rounds; each round runs every contender once, in the same order."""
    order = [NAIVE, FLOOR]
    if config.with_pixelmill:
        order += [PIXELMILL, PIXELMILL_RERUN]
    results = {name: ContenderRuns(name) for name in order}
    with tempfile.TemporaryDirectory(prefix="pixelmill-bench-") as scratch:
        root = Path(scratch)
        if config.warmup:  # fills the page cache and imports; not counted
            _round_of(config, root, order, None, log, label="warm-up")
        for index in range(config.rounds):
            _round_of(config, root, order, results, log, label=f"round {index + 1}")
    return results


def _round_of(
    config: SpeedConfig,
    root: Path,
    order: list[str],
    results: dict[str, ContenderRuns] | None,
    log: bool,
    label: str,
) -> None:
    timings: list[str] = []
    pixelmill_out = root / "pixelmill-out"
    for name in order:
        report = root / f"{name}-report.json"
        report.unlink(missing_ok=True)
        if name == PIXELMILL_RERUN:
            out = pixelmill_out  # the folder the fresh run just filled
        else:
            out = pixelmill_out if name == PIXELMILL else root / f"{name}-out"
            shutil.rmtree(out, ignore_errors=True)
        if name in (PIXELMILL, PIXELMILL_RERUN):
            argv = pixelmill_argv(config.sources, out, config.workers, report)
        else:
            argv = baseline_argv(name, config.sources, out, config.workers)
        waited = wait_for_quiet(max_wait_s=config.quiet_wait_s) if config.quiet_wait_s else 0.0
        run = run_timed(argv)
        noise = f", others {run.others_cores:.1f} cores" if run.others_cores >= 0.2 else ""
        quiet = f", waited {waited:.0f}s" if waited >= 1 else ""
        timings.append(f"{name} {run.seconds:.2f}s{noise}{quiet}")
        if results is not None:
            _record(results[name], run, report, name, len(config.sources))
        if name != PIXELMILL:
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(pixelmill_out, ignore_errors=True)
    if log:
        print(f"  {label}: " + ", ".join(timings), file=sys.stderr, flush=True)


def _record(runs: ContenderRuns, run: RunResult, report: Path, name: str, files: int) -> None:
    """Keep the run; it counts towards medians only if it did the whole job.

    Valid: exit 0 and, for pixelmill, a report with every file ``done`` (fresh run) or
    every file ``duplicate`` (re-run). A crashed or partial run would look fast.
    """
    runs.seconds.append(run.seconds)
    runs.cpu_seconds.append(run.cpu_s)
    runs.others_cores.append(run.others_cores)
    valid = run.returncode == 0
    if not valid:
        runs.errors.append(f"exit {run.returncode}: {run.stderr_tail.strip()[-400:]}")
    if name in (PIXELMILL, PIXELMILL_RERUN):
        summary = ReportSummary.read(report)
        runs.reports.append(summary)
        wanted = summary.done if name == PIXELMILL else summary.duplicate
        if wanted != files or summary.total != files:
            valid = False
            runs.errors.append(
                f"report: total {summary.total}, done {summary.done}, duplicate "
                f"{summary.duplicate}, failed {summary.failed} (expected all {files} "
                f"{'done' if name == PIXELMILL else 'duplicate'})"
            )
    runs.valid.append(valid)


def ratios(results: dict[str, ContenderRuns]) -> dict[str, float | None]:
    """Ratios of medians (all runs, and quiet runs only), per-round ratios, CPU-time ratio.

    ``speedup_*`` is baseline time / pixelmill time; ``time_*`` is pixelmill time / baseline.
    The ``clean_`` ratios use only runs with little other work on the machine (None when a
    contender has no such run); the ``paired`` ones are the median over rounds
    of the ratio within a round, robust to a round that was slow for everybody.
    """

    def of(a: float | None, b: float | None) -> float | None:
        return None if not a or not b else round(a / b, 3)

    def median_of(name: str) -> float | None:
        return results[name].median if name in results else None

    def clean_of(name: str) -> float | None:
        return results[name].clean_median if name in results else None

    def cpu_of(name: str) -> float | None:
        return results[name].median_cpu if name in results else None

    def paired(a: str, b: str) -> float | None:
        if a not in results or b not in results:
            return None
        ra, rb = results[a], results[b]
        rounds = zip(ra.seconds, ra.valid, rb.seconds, rb.valid, strict=False)
        pairs = [x / y for x, x_ok, y, y_ok in rounds if x_ok and y_ok]
        return round(statistics.median(pairs), 3) if pairs else None

    return {
        "naive_over_floor": of(median_of(NAIVE), median_of(FLOOR)),
        "clean_naive_over_floor": of(clean_of(NAIVE), clean_of(FLOOR)),
        "speedup_vs_naive": of(median_of(NAIVE), median_of(PIXELMILL)),
        "clean_speedup_vs_naive": of(clean_of(NAIVE), clean_of(PIXELMILL)),
        "speedup_vs_naive_paired": paired(NAIVE, PIXELMILL),
        "time_vs_floor": of(median_of(PIXELMILL), median_of(FLOOR)),
        "clean_time_vs_floor": of(clean_of(PIXELMILL), clean_of(FLOOR)),
        "time_vs_floor_paired": paired(PIXELMILL, FLOOR),
        "cpu_vs_floor": of(cpu_of(PIXELMILL), cpu_of(FLOOR)),
        "rerun_time_vs_fresh": of(median_of(PIXELMILL_RERUN), median_of(PIXELMILL)),
    }


def headline(r: dict[str, float | None]) -> dict[str, object]:
    """The ratios the targets are judged on: quiet runs when there are enough, else all."""
    clean = r["clean_speedup_vs_naive"] is not None and r["clean_time_vs_floor"] is not None
    vs_naive = r["clean_speedup_vs_naive"] if clean else r["speedup_vs_naive"]
    vs_floor = r["clean_time_vs_floor"] if clean else r["time_vs_floor"]
    return {
        "basis": "quiet runs" if clean else "all runs",
        "speedup_vs_naive": vs_naive,
        "time_vs_floor": vs_floor,
        "meets_vs_naive": None if vs_naive is None else vs_naive >= 2.0,
        "meets_vs_naive_aim": None if vs_naive is None else vs_naive >= 2.5,
        "meets_vs_floor": None if vs_floor is None else vs_floor <= 1.10,
    }


def compile_sources() -> None:
    """Write the byte-code of pixelmill and of the baselines, as an installation does.

    With ``PYTHONDONTWRITEBYTECODE`` set (as on this machine) nothing is ever cached and
    every run would compile pixelmill's modules again: about 0.1 s a run that no installed
    copy pays. Both contenders get their byte-code, so neither pays it.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("pixelmill")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in [*folders, str(Path(__file__).resolve().parent)]:
        compileall.compile_dir(folder, quiet=1)


def run_startup(
    sources: Sequence[Path],
    workers: int,
    rounds: int,
    quiet_wait_s: float,
    log: bool = True,
    label: str = "one tiny image",
) -> dict[str, object]:
    """Fixed cost per run: pixelmill and the floor on a few small images, alternating.

    Start-up (imports, pool) and shutdown are paid once per ``pixelmill run``; on one tiny
    image they are all there is, on ten small photos they are what keeps a short run
    from the floor's time. One warm-up round (page cache) is not counted.
    """
    compile_sources()
    seconds: dict[str, list[float]] = {PIXELMILL: [], FLOOR: []}
    cpu: dict[str, list[float]] = {PIXELMILL: [], FLOOR: []}
    with tempfile.TemporaryDirectory(prefix="pixelmill-bench-startup-") as scratch:
        root = Path(scratch)
        for index in range(rounds + 1):
            for name in (FLOOR, PIXELMILL):
                out = root / name
                shutil.rmtree(out, ignore_errors=True)
                if name == PIXELMILL:
                    argv = pixelmill_argv(sources, out, workers, root / "report.json")
                else:
                    argv = baseline_argv(name, sources, out, workers)
                if quiet_wait_s:
                    wait_for_quiet(max_wait_s=quiet_wait_s)
                run = run_timed(argv)
                if run.returncode != 0:
                    raise RuntimeError(f"{name} on {label} exited {run.returncode}")
                if index:  # round 0 warms the page cache
                    seconds[name].append(run.seconds)
                    cpu[name].append(run.cpu_s)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    if log:
        print(
            f"  start-up on {label}: floor {medians[FLOOR]:.2f}s, "
            f"pixelmill {medians[PIXELMILL]:.2f}s",
            file=sys.stderr,
            flush=True,
        )
    return {
        "label": label,
        "source": sources[0].name if len(sources) == 1 else f"{len(sources)} files",
        "files": len(sources),
        "rounds": rounds,
        "floor_s": [round(s, 4) for s in seconds[FLOOR]],
        "pixelmill_s": [round(s, 4) for s in seconds[PIXELMILL]],
        "floor_median_s": round(medians[FLOOR], 4),
        "pixelmill_median_s": round(medians[PIXELMILL], 4),
        "floor_median_cpu_s": round(statistics.median(cpu[FLOOR]), 3),
        "pixelmill_median_cpu_s": round(statistics.median(cpu[PIXELMILL]), 3),
        "extra_s": round(medians[PIXELMILL] - medians[FLOOR], 4),
        "time_vs_floor": round(medians[PIXELMILL] / medians[FLOOR], 3),
    }
