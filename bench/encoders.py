"""``python -m bench.encoders``: choose encoder settings per format and preset size.

Measures the candidates (``bench.encoder_measure``), proposes settings per format and preset,
and checks the proposal end to end: the bare floor (``bench.baselines``) against a copy of it
whose workers save with the proposed settings, alternating, for wall and CPU time, bytes per
format and the large renditions' PSNR against the upright LANCZOS pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from bench import baselines, inputs
from bench.encoder_measure import (
    FLOOR,
    HAS_MOZJPEG,
    HAS_SSIMULACRA2,
    PRESETS,
    Pixels,
    Setting,
    add_ssimulacra2,
    candidates,
    encoder_input,
    matched_quality,
    measure,
    preset_pixels,
    propose,
    psnr_and_digest,
    webp,
)
from bench.report import machine

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "encoders.json"
EXTENSIONS = {"jpeg": "jpg", "webp": "webp"}  # the default formats, as the floor writes them

Choice = dict[str, dict[str, Setting]]  # preset -> format -> setting


def _save_with(choice: Choice, image: Image.Image, out: Path, name: str) -> None:
    for fmt, ext in EXTENSIONS.items():
        (out / f"{name}.{ext}").write_bytes(choice[name][fmt].encode(encoder_input(image, fmt)))


def _use_settings(choice: Choice | None) -> None:
    """Pool initializer: this worker's floor saves with ``choice`` instead of its defaults."""
    if choice is not None:
        baselines.save_pair = lambda image, out, name: _save_with(choice, image, out, name)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # pool workers, once reaped
    return usage.ru_utime + usage.ru_stime


def _large_psnr(out: Path, pixels: Pixels, fmt: str) -> float:
    scores = []
    for index, photo in enumerate(pixels):
        reference = encoder_input(photo["large"], fmt)
        data = (out / str(index) / f"large.{EXTENSIONS[fmt]}").read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            same_size = opened.size == reference.size  # rounding of odd fits may differ
        if same_size:
            scores.append(psnr_and_digest(reference, data)[0])
    return round(statistics.fmean(scores), 3)


def run_floor(
    photos: list[Path], workers: int, choice: Choice | None, pixels: Pixels
) -> dict[str, Any]:
    """One run of the bare floor (``choice`` None) or its copy with ``choice``: wall, CPU,
    bytes per format, and the large renditions' PSNR against the upright LANCZOS pixels."""
    out = Path(tempfile.mkdtemp(prefix="pixelmill-encoders-"))
    cpu, wall = time.process_time() + _children_cpu_s(), time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_use_settings, initargs=(choice,)) as pool:
        folders = [out / str(i) for i in range(len(photos))]
        list(pool.map(baselines.floor_one, map(str, photos), folders))
    result: dict[str, Any] = {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() + _children_cpu_s() - cpu,
    }
    for fmt, ext in EXTENSIONS.items():
        result[f"{fmt}_bytes"] = sum(f.stat().st_size for f in out.glob(f"*/*.{ext}"))
        result[f"{fmt}_large_psnr_db"] = _large_psnr(out, pixels, fmt)
    shutil.rmtree(out)
    return result


def check(
    photos: list[Path], workers: int, choice: Choice, pixels: Pixels, rounds: int
) -> dict[str, Any]:
    """The floor and its copy with ``choice``, alternating after a warm-up; medians."""
    run_floor(photos, workers, None, pixels)  # warm-up: page cache, first imports
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], "proposed": []}
    for _ in range(rounds):
        runs["floor"].append(run_floor(photos, workers, None, pixels))
        runs["proposed"].append(run_floor(photos, workers, choice, pixels))
    summary = {}
    for name, results in runs.items():
        summary[name] = {**results[-1], "runs_wall_s": [round(r["wall_s"], 3) for r in results]}
        for key in ("wall_s", "cpu_s"):
            summary[name][key] = round(statistics.median(r[key] for r in results), 3)
    return summary


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(photos: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Measure, propose, check; the whole result as plain data (JSON)."""
    log(f"encoders: {len(photos)} photos, {args.repeats} repeats")
    pixels = preset_pixels(photos)
    settings = candidates(args.avif_speeds)
    rows = measure(pixels, {p: settings for p in PRESETS}, args.repeats)
    matched: dict[str, list[Setting]] = {p: [] for p in PRESETS}
    for p in PRESETS:
        target = next(r.size for r in rows if r.preset == p and r.setting == FLOOR["webp"])
        for method in range(4):  # the methods faster than the default 4
            quality = matched_quality(pixels, p, method, target)
            if quality is not None and quality != 80:
                matched[p].append(webp(method, quality))
    rows += measure(pixels, matched, args.repeats)
    if args.ssimulacra2 and HAS_SSIMULACRA2:
        log("encoders: SSIMULACRA2 of every distinct result")
        add_ssimulacra2(rows, pixels, args.jobs)
    proposal = {fmt: propose(rows, fmt) for fmt in EXTENSIONS}
    floor_cpu = sum(r.cpu_s for r in rows if r.setting in FLOOR.values())
    chosen_cpu = sum(r.cpu_s for fmt in EXTENSIONS for r in proposal[fmt].values())
    result: dict[str, Any] = {
        "machine": machine(),
        "photos": len(photos),
        "repeats": args.repeats,
        "mozjpeg": HAS_MOZJPEG,
        "ssimulacra2": bool(args.ssimulacra2 and HAS_SSIMULACRA2),
        "rows": [r.as_dict() for r in rows],
        "floor": {fmt: s.label for fmt, s in FLOOR.items()},
        "proposal": {
            fmt: {p: r.setting.label for p, r in c.items()} for fmt, c in proposal.items()
        },
        "encode_cpu_s": {"floor": round(floor_cpu, 3), "proposed": round(chosen_cpu, 3)},
    }
    if args.check_rounds:
        log(f"encoders: floor vs floor with the proposal, {args.check_rounds} rounds")
        choice = {p: {fmt: proposal[fmt][p].setting for fmt in EXTENSIONS} for p in PRESETS}
        result["check"] = check(photos, args.workers, choice, pixels, args.check_rounds)
    return result


def render(result: dict[str, Any]) -> str:
    """The table (Markdown) and the proposal."""
    m = result["machine"]
    lines = [
        f"Encoders: {result['photos']} corpus photos, {m['cpus']} CPUs, Python {m['python']}, "
        f"Pillow {m['pillow']}, {m['date']}; times are sums over the photos of the median of "
        f"{result['repeats']} encodes",
        "",
        "| format | preset | setting | CPU ms | wall ms | KB | bytes vs floor | PSNR dB "
        "| SSIMULACRA2 | |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = result["rows"]
    floors = {
        (r["format"], r["preset"]): r
        for r in rows
        if result["floor"].get(r["format"]) == r["setting"]
    }
    for r in sorted(rows, key=lambda r: (r["format"], PRESETS.index(r["preset"]))):
        floor = floors.get((r["format"], r["preset"]))
        ratio = f"{r['bytes'] / floor['bytes'] - 1:+.1%}" if floor else ""
        marks = []
        if floor is r:
            marks.append("floor")
        if result["proposal"].get(r["format"], {}).get(r["preset"]) == r["setting"]:
            marks.append("**proposed**")
        ssim2 = "-" if r["ssimulacra2"] is None else f"{r['ssimulacra2']:.2f}"
        lines.append(
            f"| {r['format']} | {r['preset']} | {r['setting']} | {r['cpu_ms']:.0f} "
            f"| {r['wall_ms']:.0f} | {r['bytes'] / 1000:.0f} | {ratio} | {r['psnr_db']:.2f} "
            f"| {ssim2} | {', '.join(marks)} |"
        )
    cpu = result["encode_cpu_s"]
    lines += [
        "",
        "Proposal: "
        + "; ".join(
            f"{fmt} " + ", ".join(f"{p} {s}" for p, s in c.items())
            for fmt, c in result["proposal"].items()
        ),
        f"Encode CPU, all presets x (JPEG, WebP): floor {cpu['floor']:.2f} s, proposed "
        f"{cpu['proposed']:.2f} s ({cpu['proposed'] / cpu['floor'] - 1:+.1%})",
    ]
    if "check" in result:
        lines += [
            "",
            "| end to end | wall s | CPU s | JPEG KB | WebP KB | JPEG large dB | WebP large dB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, c in result["check"].items():
            lines.append(
                f"| {name} | {c['wall_s']:.2f} | {c['cpu_s']:.2f} | {c['jpeg_bytes'] / 1000:.0f} "
                f"| {c['webp_bytes'] / 1000:.0f} | {c['jpeg_large_psnr_db']:.2f} "
                f"| {c['webp_large_psnr_db']:.2f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.encoders", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="encodes per median (default 5)")
    parser.add_argument(
        "--avif-speeds",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[6, 8, 10],
        help="AVIF speeds to measure, comma-separated ('' for none; 0-4 take seconds per image)",
    )
    parser.add_argument("--no-ssimulacra2", dest="ssimulacra2", action="store_false")
    parser.add_argument("--jobs", type=int, default=2, help="processes for SSIMULACRA2")
    parser.add_argument("--check-rounds", type=int, default=3, help="end-to-end rounds (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="floor pool size in the check")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--render", type=Path, help="print the tables of a saved JSON and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    result = run(inputs.corpus_photos(), args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
