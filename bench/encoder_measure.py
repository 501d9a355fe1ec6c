"""Encoder settings measured on a preset's pixels: CPU time, bytes, PSNR, SSIMULACRA2.

Each corpus photo's preset pixels are made once (upright, LANCZOS from the source to the box,
no cascade) and encoded with candidate settings. Per (format, preset, setting): CPU time of
the encode (sum over photos of the median of repeats: the machine is shared, so CPU time is
the honest figure), wall time, bytes, PSNR against those pixels and SSIMULACRA2 (perceptual,
100 = identical). ``propose`` picks per format and preset the settings with the least CPU
time whose total bytes stay within the floor's (JPEG q85 plain, WebP q80 method 4) and whose
PSNR is within 0.3 dB of the floor's on every preset.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from bench import baselines

try:  # optional: a lossless post-pass, and the perceptual metric
    import mozjpeg_lossless_optimization as mozjpeg
except ImportError:
    mozjpeg = None
try:
    import ssimulacra2
except ImportError:
    ssimulacra2 = None
HAS_MOZJPEG = mozjpeg is not None
HAS_SSIMULACRA2 = ssimulacra2 is not None

PRESETS = [name for name, _ in baselines.BOXES]
PSNR_MARGIN_DB = 0.3
TIE_CPU = 1.02  # settings within 2 % of the least CPU time are a tie: fewer bytes wins
PILLOW_NAMES = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


@dataclass(frozen=True)
class Setting:
    """One encoder configuration: Pillow ``save`` options, plus an optional MozJPEG pass."""

    fmt: str
    label: str
    options: tuple[tuple[str, Any], ...]
    mozjpeg_pass: bool = False

    def encode(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, PILLOW_NAMES[self.fmt], **dict(self.options))
        data = buffer.getvalue()
        return bytes(mozjpeg.optimize(data)) if self.mozjpeg_pass and mozjpeg else data


def webp(method: int, quality: int = 80) -> Setting:
    return Setting("webp", f"m{method} q{quality}", (("quality", quality), ("method", method)))


FLOOR = {"jpeg": Setting("jpeg", "q85 plain", (("quality", 85),)), "webp": webp(4)}


def candidates(avif_speeds: list[int]) -> list[Setting]:
    q85 = (("quality", 85),)
    jpeg = [
        FLOOR["jpeg"],
        Setting("jpeg", "q85 optimize", (*q85, ("optimize", True))),
        Setting(
            "jpeg", "q85 optimize+progressive", (*q85, ("optimize", True), ("progressive", True))
        ),
    ]
    if mozjpeg is not None:
        jpeg.append(Setting("jpeg", "q85 plain + mozjpeg pass", q85, mozjpeg_pass=True))
    avif = [Setting("avif", f"speed {s} (q75)", (("speed", s),)) for s in avif_speeds]
    return jpeg + [webp(m) for m in range(7)] + avif


@dataclass
class Row:
    """The measurements of one setting on one preset, summed or listed over the photos."""

    setting: Setting
    preset: str
    cpu_s: float = 0.0
    wall_s: float = 0.0
    size: int = 0
    psnr: list[float] = field(default_factory=list)
    ssim2: list[float] = field(default_factory=list)
    encoded: list[tuple[int, str, bytes]] = field(default_factory=list)  # photo, digest, data

    def mean_psnr(self) -> float:
        return statistics.fmean(self.psnr)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.setting.fmt,
            "preset": self.preset,
            "setting": self.setting.label,
            "cpu_ms": round(self.cpu_s * 1000, 1),
            "wall_ms": round(self.wall_s * 1000, 1),
            "bytes": self.size,
            "psnr_db": round(self.mean_psnr(), 3),
            "ssimulacra2": round(statistics.fmean(self.ssim2), 2) if self.ssim2 else None,
        }


Pixels = list[dict[str, Image.Image]]  # per photo: preset -> upright LANCZOS pixels


def preset_pixels(photos: list[Path]) -> Pixels:
    """Each preset's pixels, made once per photo from the upright source (no cascade)."""
    pixels: Pixels = []
    for path in photos:
        with Image.open(path) as opened:
            source = baselines.working_copy(ImageOps.exif_transpose(opened))
        by_preset = {}
        for name, box in baselines.BOXES:
            size = baselines.fit(*source.size, box)
            by_preset[name] = (
                source if size == source.size else source.resize(size, Image.Resampling.LANCZOS)
            )
        pixels.append(by_preset)
    return pixels


def encoder_input(image: Image.Image, fmt: str) -> Image.Image:
    """What the floor hands the encoder: RGB for JPEG, the working copy (maybe RGBA) else."""
    return image.convert("RGB") if fmt == "jpeg" and image.mode != "RGB" else image


def visible(image: Image.Image) -> Image.Image:
    """RGBA composited over mid grey (as SSIMULACRA2 does): what hides under transparent
    pixels (which WebP rewrites to compress better) does not count."""
    if image.mode != "RGBA":
        return image
    grey = Image.new("RGBA", image.size, (128, 128, 128, 255))
    return Image.alpha_composite(grey, image).convert("RGB")


def psnr_and_digest(reference: Image.Image, data: bytes) -> tuple[float, str]:
    with Image.open(io.BytesIO(data)) as opened:
        decoded = opened.convert(reference.mode)
    raw = decoded.tobytes()
    diff = np.asarray(visible(reference), np.float64) - np.asarray(visible(decoded), np.float64)
    mse = float(np.mean(diff * diff))
    psnr = 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
    return float(psnr), hashlib.sha1(raw).hexdigest()


def measure(pixels: Pixels, plan: dict[str, list[Setting]], repeats: int) -> list[Row]:
    """Encode each photo's preset with every planned setting, repeats interleaved."""
    rows = {(s, p): Row(s, p) for p, settings in plan.items() for s in settings}
    for index, photo in enumerate(pixels):
        for preset, settings in plan.items():
            images = {fmt: encoder_input(photo[preset], fmt) for fmt in PILLOW_NAMES}
            times: dict[Setting, list[tuple[float, float]]] = {s: [] for s in settings}
            data: dict[Setting, bytes] = {}
            for _ in range(repeats):
                for s in settings:
                    cpu, wall = time.process_time(), time.perf_counter()
                    data[s] = s.encode(images[s.fmt])
                    times[s].append((time.process_time() - cpu, time.perf_counter() - wall))
            for s in settings:
                row = rows[(s, preset)]
                row.cpu_s += statistics.median(t[0] for t in times[s])
                row.wall_s += statistics.median(t[1] for t in times[s])
                row.size += len(data[s])
                psnr, digest = psnr_and_digest(images[s.fmt], data[s])
                row.psnr.append(psnr)
                row.encoded.append((index, digest, data[s]))
    return list(rows.values())


def matched_quality(pixels: Pixels, preset: str, method: int, target: int) -> int | None:
    """The highest WebP quality in 70..85 whose total bytes at ``method`` are <= ``target``."""
    low, high, best = 70, 85, None
    while low <= high:
        middle = (low + high) // 2
        setting = webp(method, middle)
        total = sum(len(setting.encode(photo[preset])) for photo in pixels)
        if total <= target:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _ssimulacra2_score(reference_png: bytes, data: bytes) -> float:
    files = []
    for blob in (reference_png, data):
        with Image.open(io.BytesIO(blob)) as opened:
            # The package drops alpha without compositing: composite here.
            files.append(io.BytesIO(_png(visible(opened)) if opened.mode == "RGBA" else blob))
    return float(ssimulacra2.compute_ssimulacra2(*files))


def add_ssimulacra2(rows: list[Row], pixels: Pixels, jobs: int) -> None:
    """Score each distinct decoded result once (lossless variants share their pixels)."""
    tasks: dict[tuple[int, str, str, str], bytes] = {}
    for row in rows:
        for index, digest, data in row.encoded:
            tasks.setdefault((index, row.preset, row.setting.fmt, digest), data)
    references: dict[tuple[int, str, str], bytes] = {}
    for index, preset, fmt, _ in tasks:
        if (index, preset, fmt) not in references:
            image = encoder_input(pixels[index][preset], fmt)
            references[(index, preset, fmt)] = _png(image)
    keys = list(tasks)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        scores = dict(
            zip(
                keys,
                pool.map(_ssimulacra2_score, [references[k[:3]] for k in keys], tasks.values()),
                strict=True,
            )
        )
    for row in rows:
        row.ssim2 = [scores[(i, row.preset, row.setting.fmt, d)] for i, d, _ in row.encoded]


def propose(rows: list[Row], fmt: str) -> dict[str, Row]:
    """Per preset, the settings with the least total CPU time that keep bytes and PSNR."""
    by_preset = {p: [r for r in rows if r.setting.fmt == fmt and r.preset == p] for p in PRESETS}
    floor = {p: next(r for r in by_preset[p] if r.setting == FLOOR[fmt]) for p in PRESETS}
    allowed = [
        [r for r in by_preset[p] if r.mean_psnr() >= floor[p].mean_psnr() - PSNR_MARGIN_DB]
        for p in PRESETS
    ]
    budget = sum(r.size for r in floor.values())
    feasible = [c for c in itertools.product(*allowed) if sum(r.size for r in c) <= budget]
    least = min(sum(r.cpu_s for r in c) for c in feasible)
    ties = [c for c in feasible if sum(r.cpu_s for r in c) <= least * TIE_CPU]
    return dict(zip(PRESETS, min(ties, key=lambda c: sum(r.size for r in c)), strict=True))
