"""``python -m bench``: speed, memory and API benchmarks; a table on stdout, JSON on disk."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from bench import inputs
from bench.api import api_available, run_api_vs_cli, run_upload_memory
from bench.contenders import DESCRIPTIONS, cli_available
from bench.distributed import distributed_available, distributed_table, run_distributed
from bench.idle import MAX_ROUNDS as IDLE_MAX_ROUNDS
from bench.idle import QUICK_ROUNDS as IDLE_QUICK_ROUNDS
from bench.idle import ROUNDS as IDLE_ROUNDS
from bench.idle import run_idle
from bench.load import DEFAULT_CLIENTS, DEFAULT_SECONDS, run_load, summary_line
from bench.memory import run_memory
from bench.report import machine, render
from bench.speed import (
    NOISE_LIMIT_CORES,
    SpeedConfig,
    headline,
    ratios,
    run_speed,
    run_startup,
)

PARTS = ("speed", "memory", "api", "load", "distributed", "idle", "quality", "encoders")
# The quality comparison (1.5-2.5 minutes here) and the encoder table (about a quarter of an
# hour) run only when asked for by name. (They stay last: every part before them runs by
# default.)
DEFAULT_PARTS = PARTS[:-2]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="pixelmill vs a naive sequential loop and a bare pooled loop (the floor).",
    )
    parser.add_argument("--rounds", type=int, default=5, help="speed rounds (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 speed rounds, 1 API round, 3 idle rounds, fewer memory runs",
    )
    parser.add_argument("--workers", type=int, default=2, help="pool size for every contender")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable); quality and encoders run only when named",
    )
    parser.add_argument(
        "--baselines-only", action="store_true", help="leave pixelmill out (harness check)"
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start each run at once instead of waiting (up to 10 s, 1.5 s when --quick) "
        "for other work on the machine to calm down",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to save results")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="load: how long the uploaders run"
    )
    parser.add_argument(
        "--clients", type=int, default=DEFAULT_CLIENTS, help="load: concurrent uploaders"
    )
    parser.add_argument(
        "--idle-rounds",
        type=int,
        default=None,
        help=f"idle: rounds, one upload to each service a round (default {IDLE_ROUNDS}, "
        f"{IDLE_QUICK_ROUNDS} when --quick, at most {IDLE_MAX_ROUNDS})",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.idle_rounds is not None and not 1 <= args.idle_rounds <= IDLE_MAX_ROUNDS:
        parser.error(f"--idle-rounds must be from 1 to {IDLE_MAX_ROUNDS}")
    return args


def _quiet_wait(args: argparse.Namespace) -> float:
    return 0.0 if args.no_wait else (1.5 if args.quick else 10.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.only or list(DEFAULT_PARTS)
    rounds = min(args.rounds, 3) if args.quick else args.rounds
    with_pixelmill = not args.baselines_only and cli_available()
    if not with_pixelmill and not args.baselines_only:
        log("pixelmill CLI not installed yet: running the baselines only")
    photos = inputs.corpus_photos()
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "contenders": DESCRIPTIONS,
    }

    if "speed" in parts:
        log(f"speed: {len(photos)} photos, {rounds} rounds, {args.workers} workers")
        config = SpeedConfig(
            photos, rounds, args.workers, with_pixelmill, quiet_wait_s=_quiet_wait(args)
        )
        runs = run_speed(config)
        r = ratios(runs)
        startup = small_set = None
        if with_pixelmill:
            startup_rounds = 5 if args.quick else 10
            tiny = min(photos, key=lambda p: p.stat().st_size)
            try:
                startup = run_startup([tiny], args.workers, startup_rounds, _quiet_wait(args))
                small_set = run_startup(
                    inputs.small_jpegs(),
                    args.workers,
                    startup_rounds,
                    _quiet_wait(args),
                    label=f"{inputs.SMALL_COUNT} small photos",
                )
            except RuntimeError as exc:
                log(f"start-up measurement failed: {exc}")
        results["speed"] = {
            "files": len(photos),
            "rounds": rounds,
            "workers": args.workers,
            "contenders": {name: c.as_dict() for name, c in runs.items()},
            "ratios": r,
            "noise_limit_cores": NOISE_LIMIT_CORES,
            "headline": headline(r),
            "startup": startup,
            "startup_small_set": small_set,
        }

    if "memory" in parts:
        log(f"memory: generating inputs (cached under {inputs.CACHE})")
        results["memory"] = run_memory(args.workers, with_pixelmill, quick=args.quick)

    if "api" in parts:
        results["api"] = _api(args, photos, with_pixelmill)

    if "load" in parts and with_pixelmill and api_available():
        log(f"load: {args.clients} concurrent uploaders for {args.seconds:g} s")
        results["load"] = run_load(args.workers, args.clients, args.seconds)

    if "distributed" in parts and with_pixelmill:
        results["distributed"] = _distributed(args, photos)

    if "idle" in parts:
        results["idle"] = _idle(args, with_pixelmill)

    if "quality" in parts:
        from bench import quality  # numpy, scipy: imported only for this part

        results["quality"] = {"skipped": "needs the pixelmill CLI"}
        if with_pixelmill:
            ssim2 = not args.quick  # --quick: PSNR only (about 10 s instead of 90)
            try:
                results["quality"] = quality.run(photos, args.workers, args.workers, ssim2)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                results["quality"] = {"skipped": f"failed: {exc}"}

    if "encoders" in parts:
        from bench import encoders  # numpy, scipy: imported only for this part

        quick = ["--repeats", "1", "--check-rounds", "1", "--no-ssimulacra2"] if args.quick else []
        options = encoders.parse_args([*quick, "--workers", str(args.workers)])
        results["encoders"] = encoders.run(photos, options)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    if "load" in results:
        print("\n" + summary_line(results["load"]))
    if "distributed" in results:
        print("\n" + distributed_table(results["distributed"]))
    if "quality" in results and "skipped" not in results["quality"]:
        from bench.quality import render as quality_table

        print("\n" + quality_table(results["quality"]))
    if "encoders" in results:
        from bench.encoders import render as encoders_table

        print("\n" + encoders_table(results["encoders"]))
    print(f"\nJSON: {args.json}")
    return 0


def _distributed(args: argparse.Namespace, photos: list[Path]) -> dict[str, Any]:
    missing = distributed_available()
    if missing is not None:
        return {"skipped": missing}
    rounds = 1 if args.quick else 2
    log(f"distributed: {len(photos)} photos, {rounds} round(s), local vs celery, folder vs S3")
    try:
        return run_distributed(photos, rounds, quiet_wait_s=_quiet_wait(args))
    except (RuntimeError, OSError) as exc:
        return {"skipped": f"failed: {exc}"}


def _idle(args: argparse.Namespace, with_pixelmill: bool) -> dict[str, Any]:
    if not with_pixelmill:
        return {"skipped": "needs the pixelmill CLI"}
    if not api_available():
        return {"skipped": "pixelmill.api.app (create_app, serve) is not available yet"}
    rounds = args.idle_rounds or (IDLE_QUICK_ROUNDS if args.quick else IDLE_ROUNDS)
    log(
        f"idle: one 12-MP photo at a time, 1 vs 2 workers, {rounds} rounds (inputs under "
        f"{inputs.CACHE})"
    )
    try:
        return run_idle(rounds, quiet_wait_s=_quiet_wait(args))
    except (RuntimeError, OSError, ValueError, KeyError, httpx.HTTPError) as exc:
        return {"skipped": f"failed: {exc}"}


def _api(args: argparse.Namespace, photos: list[Path], with_pixelmill: bool) -> dict[str, Any]:
    if not with_pixelmill:
        return {"skipped": "needs the pixelmill CLI"}
    if not api_available():
        return {"skipped": "pixelmill.api.app (create_app, serve) is not available yet"}
    result: dict[str, Any] = {"errors": []}
    api_rounds = 1 if args.quick else 3
    log(f"api: {len(photos)} photos as one batch, {api_rounds} rounds alternating with the CLI")
    try:
        result["batch"] = run_api_vs_cli(
            photos, api_rounds, args.workers, quiet_wait_s=_quiet_wait(args)
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        result["errors"].append(f"batch: {exc}")
    try:
        result["upload"] = run_upload_memory(inputs.many_jpegs(), args.workers)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        result["errors"].append(f"upload: {exc}")
    return result


if __name__ == "__main__":
    sys.exit(main())
