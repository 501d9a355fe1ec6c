"""``python -m bench.quality``: pixelmill's renditions against the bare floor's, bytes and quality.

The corpus photos rendered once by ``pixelmill run`` and once by the floor
(``bench.baselines.floor_one``); per preset and format, each one's total bytes and mean PSNR
and SSIMULACRA2 against one reference: the upright LANCZOS pixels of
``bench.encoder_measure.preset_pixels`` (source upright, LANCZOS straight to the box). The bar:
per format, bytes no larger than the floor's, large renditions' PSNR within 0.3 dB of its.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageCms

from bench import baselines, inputs
from bench.contenders import ReportSummary, cli_available, pixelmill_argv
from bench.encoder_measure import (
    HAS_SSIMULACRA2,
    _png,
    _ssimulacra2_score,
    encoder_input,
    preset_pixels,
    psnr_and_digest,
)
from bench.report import machine

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "quality.json"
PRESETS = tuple(name for name, _ in baselines.BOXES)  # large, medium, thumbnail
FORMATS = {"jpeg": "jpg", "webp": "webp"}
CONTENDERS = ("pixelmill", "floor")
PSNR_MARGIN_DB = 0.3

Files = dict[str, str]  # "preset.format" -> rendition file


def render_pixelmill(photos: list[Path], out: Path, workers: int) -> tuple[list[Files], Any]:
    """``pixelmill run`` into ``out``; per photo its renditions (from the report), summary."""
    report = out.with_name(out.name + "-report.json")
    argv = pixelmill_argv(photos, out, workers, report)
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=900)
    if not report.exists():
        raise RuntimeError(f"pixelmill run wrote no report: {done.stderr.strip()[-500:]}")
    images = json.loads(report.read_text())["images"]
    by_sha = {i["sha256"]: i["renditions"] for i in images if i["renditions"]}
    by_source: dict[str, Files] = {}
    for image in images:
        renditions = image["renditions"] or by_sha.get(image["sha256"], [])
        files = {f"{r['name']}.{r['format']}": r["path"] for r in renditions}
        by_source[str(Path(image["source"]).resolve())] = files
    result = [by_source.get(str(p.resolve()), {}) for p in photos]
    return result, ReportSummary.read(report).as_dict()


def render_floor(photos: list[Path], out: Path, workers: int) -> list[Files]:
    """The floor into ``out/<n>/<preset>.<ext>``, as ``python -m bench.baselines floor``."""
    baselines.run_floor(list(map(str, photos)), out, workers)
    keys = [(p, fmt, ext) for p in PRESETS for fmt, ext in FORMATS.items()]
    return [
        {f"{p}.{f}": str(out / str(i) / f"{p}.{e}") for p, f, e in keys} for i in range(len(photos))
    ]


def _profile(image: Image.Image) -> str | None:
    """The embedded colour profile's name, unless sRGB (pixelmill converts the others)."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    try:
        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # unreadable: pixelmill falls back to a plain conversion too
    return None if name.lower().startswith("srgb") and image.mode != "CMYK" else name


def score_photo(path: str, files: dict[str, Files], ssim2: bool) -> dict[str, Any]:
    """One photo: bytes, size, PSNR and SSIMULACRA2 of each contender's renditions."""
    with Image.open(path) as opened:
        profile = _profile(opened)
    pixels = preset_pixels([Path(path)])[0]
    scores: dict[str, dict[str, Any]] = {}
    done: dict[tuple[str, str], tuple[float, float | None]] = {}  # same pixels, same scores
    for contender, by_key in files.items():
        scores[contender] = {}
        for key, file in by_key.items():
            preset, fmt = key.split(".")
            if not Path(file).exists():
                continue
            data = Path(file).read_bytes()
            reference = encoder_input(pixels[preset], fmt)
            with Image.open(io.BytesIO(data)) as opened:
                size = opened.size
            record: dict[str, Any] = {"bytes": len(data), "size": list(size)}
            record["psnr"] = record["ssimulacra2"] = None
            if size == reference.size:
                psnr, digest = psnr_and_digest(reference, data)
                if (key, digest) not in done:
                    score = _ssimulacra2_score(_png(reference), data) if ssim2 else None
                    done[(key, digest)] = (psnr, score)
                record["psnr"], record["ssimulacra2"] = done[(key, digest)]
            scores[contender][key] = record
    alpha = pixels["large"].mode == "RGBA"
    return {"photo": Path(path).name, "profile": profile, "alpha": alpha, "scores": scores}


def deliberate(photo: dict[str, Any], fmt: str) -> bool:
    """Where pixelmill makes other pixels on purpose: it converts a non-sRGB profile to sRGB
    and flattens alpha onto white for JPEG; the floor and the reference do neither."""
    return photo["profile"] is not None or (photo["alpha"] and fmt == "jpeg")


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def summarize(photos: list[dict[str, Any]], like_for_like: bool) -> dict[str, Any]:
    """Per preset and format: each contender's bytes over the renditions both made; mean PSNR
    and SSIMULACRA2 over those both made at the reference's size. Like for like leaves out
    the photos where pixelmill's pixels differ on purpose."""
    rows: dict[str, Any] = {}
    for fmt, preset in itertools.product(FORMATS, (*PRESETS, "all")):
        keys = [f"{p}.{fmt}" for p in PRESETS] if preset == "all" else [f"{preset}.{fmt}"]
        pairs = [
            pair
            for photo, key in itertools.product(photos, keys)
            if not (like_for_like and deliberate(photo, fmt))
            and all(pair := [photo["scores"][c].get(key) for c in CONTENDERS])
        ]
        scored = [pair for pair in pairs if all(r["psnr"] is not None for r in pair)]
        row: dict[str, Any] = {"rendered": len(pairs), "compared": len(scored)}
        for i, c in enumerate(CONTENDERS):
            row[c] = {"bytes": sum(pair[i]["bytes"] for pair in pairs)}
            for metric in ("psnr", "ssimulacra2"):
                row[c][metric] = _mean([p[i][metric] for p in scored if p[i][metric] is not None])
        floor_bytes = row["floor"]["bytes"]
        row["bytes_ratio"] = (
            round(row["pixelmill"]["bytes"] / floor_bytes, 4) if floor_bytes else None
        )
        rows[f"{preset}.{fmt}"] = row
    return rows


def verdict(rows: dict[str, Any]) -> dict[str, dict[str, bool]]:
    out = {}
    for fmt in FORMATS:
        total, large = rows[f"all.{fmt}"], rows[f"large.{fmt}"]
        p, f = large["pixelmill"]["psnr"], large["floor"]["psnr"]
        out[fmt] = {
            "bytes_ok": total["pixelmill"]["bytes"] <= total["floor"]["bytes"],
            "large_psnr_ok": p is not None and f is not None and p >= f - PSNR_MARGIN_DB,
        }
    return out


def run(photos: list[Path], workers: int, jobs: int, ssim2: bool) -> dict[str, Any]:
    ssim2 = ssim2 and HAS_SSIMULACRA2
    with tempfile.TemporaryDirectory(prefix="pixelmill-quality-") as temp:
        log(f"quality: {len(photos)} photos, pixelmill run and the floor, {workers} workers")
        mill, summary = render_pixelmill(photos, Path(temp) / "pixelmill", workers)
        floor = render_floor(photos, Path(temp) / "floor", workers)
        log(f"quality: scoring, {jobs} processes{', SSIMULACRA2 too' if ssim2 else ''}")
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {  # the largest files first, so no process waits alone at the end
                i: pool.submit(
                    score_photo,
                    str(photos[i]),
                    {CONTENDERS[0]: mill[i]} | {CONTENDERS[1]: floor[i]},
                    ssim2,
                )
                for i in sorted(range(len(photos)), key=lambda i: -photos[i].stat().st_size)
            }
            scored = [futures[i].result() for i in range(len(photos))]
    rows, like = summarize(scored, False), summarize(scored, True)
    return {
        "machine": machine(),
        "photos": len(photos),
        "workers": workers,
        "ssimulacra2": ssim2,
        "pixelmill_report": summary,
        "scoring_s": round(time.perf_counter() - started, 1),
        "rows": rows,
        "verdict": verdict(rows),
        "like_for_like": {"rows": like, "verdict": verdict(like)},
        "deliberate": sorted(
            f"{p['photo']}: {p['profile'] or 'alpha, JPEG only'}"
            for p in scored
            if deliberate(p, "jpeg")
        ),
        "per_photo": scored,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _delta(row: dict[str, Any], metric: str) -> str:
    mill, floor = row["pixelmill"][metric], row["floor"][metric]
    return "-" if mill is None or floor is None else f"{mill - floor:+.2f}"


def _table(rows: dict[str, Any]) -> list[str]:
    lines = [
        "| format | preset | pixelmill KB | floor KB | bytes vs floor | compared | PSNR pixelmill "
        "| PSNR floor | Δ dB | SSIMULACRA2 pixelmill | floor | Δ |",
        "|---|---|" + "---:|" * 10,
    ]
    for key, row in rows.items():
        preset, fmt = key.split(".")
        mill, floor = row["pixelmill"], row["floor"]
        ratio = "-" if row["bytes_ratio"] is None else f"{row['bytes_ratio'] - 1:+.1%}"
        lines.append(
            f"| {fmt} | {'**all**' if preset == 'all' else preset} | {mill['bytes'] / 1000:.0f} "
            f"| {floor['bytes'] / 1000:.0f} | {ratio} | {row['compared']}/{row['rendered']} "
            f"| {_num(mill['psnr'])} | {_num(floor['psnr'])} | {_delta(row, 'psnr')} "
            f"| {_num(mill['ssimulacra2'])} | {_num(floor['ssimulacra2'])} "
            f"| {_delta(row, 'ssimulacra2')} |"
        )
    return lines


def _verdicts(verdicts: dict[str, dict[str, bool]]) -> list[str]:
    word = {True: "met", False: "MISSED"}
    return [
        f"- {fmt}: bytes ≤ floor {word[v['bytes_ok']]}; large PSNR within {PSNR_MARGIN_DB} dB "
        f"of the floor's {word[v['large_psnr_ok']]}"
        for fmt, v in verdicts.items()
    ]


def render(result: dict[str, Any]) -> str:
    """Both tables (Markdown) and the verdicts."""
    m, report = result["machine"], result["pixelmill_report"]
    like = result["like_for_like"]
    return "\n".join(
        [
            f"Quality: {result['photos']} corpus photos, pixelmill `{m['commit']}` against the "
            f"floor, {m['date']}, Pillow {m['pillow']}; pixelmill run: {report['done']} done, "
            f"{report['failed']} failed. KB are 1000 bytes; compared = renditions of the "
            "reference's size / rendered by both.",
            "",
            *_table(result["rows"]),
            "",
            "Verdict (every compared rendition):",
            *_verdicts(result["verdict"]),
            "",
            "Like for like, without what pixelmill changes on purpose ("
            + "; ".join(result["deliberate"])
            + "):",
            "",
            *_table(like["rows"]),
            "",
            "Verdict (like for like):",
            *_verdicts(like["verdict"]),
        ]
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("photos", nargs="*", type=Path, help="default: the corpus photos")
    parser.add_argument("--workers", type=int, default=2, help="render pool size (default 2)")
    parser.add_argument("--jobs", type=int, default=2, help="scoring processes (default 2)")
    parser.add_argument("--no-ssimulacra2", dest="ssimulacra2", action="store_false")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--render", type=Path, help="print the table of a saved JSON and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    if not cli_available():
        raise SystemExit("the pixelmill CLI is not installed")
    result = run(args.photos or inputs.corpus_photos(), args.workers, args.jobs, args.ssimulacra2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
