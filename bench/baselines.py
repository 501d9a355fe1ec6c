"""The two baselines pixelmill is measured against, runnable as their own process.

``python -m bench.baselines naive OUT SRC...`` — the sequential loop pixelmill replaces: one
process, full decode, upright, LANCZOS from the full image to every box, save.

``python -m bench.baselines floor OUT SRC... [--workers N]`` — the same codecs with no
bookkeeping (no hashing, manifests, colour management, limits or atomic writes): JPEG DCT
scaling on load, a LANCZOS cascade with ``reducing_gap``, over a process pool. Nothing
reasonable does this work faster in Python, so it is the floor.

Both write ``OUT/<n>/<box>.<ext>`` and run as subprocesses so that every contender pays
interpreter start-up and pool start-up the same way.
"""

from __future__ import annotations

import argparse
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pillow_heif
from PIL import Image, ImageOps

pillow_heif.register_heif_opener()  # the corpus has a HEIC; pixelmill reads it too

BOXES = (("large", 1920), ("medium", 800), ("thumbnail", 150))  # largest first
JPEG_QUALITY = 85
WEBP_QUALITY = 80
DRAFT_MIN_SIDE = 2 * BOXES[0][1]  # DCT scaling keeps the longer side >= 2x the largest box


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size inside ``box`` x ``box`` with the same aspect ratio, never upscaled."""
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def working_copy(image: Image.Image) -> Image.Image:
    """RGB, or RGBA where the source has alpha (WebP keeps it, JPEG flattens it)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    target = "RGBA" if has_alpha else "RGB"
    return image if image.mode == target else image.convert(target)


def save_pair(image: Image.Image, out: Path, name: str) -> None:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    rgb.save(out / f"{name}.jpg", "JPEG", quality=JPEG_QUALITY)
    image.save(out / f"{name}.webp", "WEBP", quality=WEBP_QUALITY)


def naive_one(source: str, out: Path) -> None:
    """Full decode, then LANCZOS from the full-size image to each box."""
    out.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as opened:
        image = working_copy(ImageOps.exif_transpose(opened))
    for name, box in BOXES:
        save_pair(image.resize(fit(*image.size, box), Image.Resampling.LANCZOS), out, name)


def floor_one(source: str, out: Path) -> None:
    """DCT-scaled decode, LANCZOS cascade (large <- decoded, medium <- large, ...)."""
    out.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as opened:
        orientation = opened.getexif().get(0x0112, 1)
        width, height = opened.size
        longer = max(width, height)
        if opened.format == "JPEG" and longer > DRAFT_MIN_SIDE:
            ratio = DRAFT_MIN_SIDE / longer
            opened.draft("RGB", (math.ceil(width * ratio), math.ceil(height * ratio)))
        opened.load()
        current = working_copy(opened)
    for name, box in BOXES:
        size = fit(width, height, box)
        if current.size != size:
            current = current.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        # Orienting the (small) rendition is cheaper than orienting the decoded image.
        method = _TRANSPOSE.get(orientation)
        save_pair(current if method is None else current.transpose(method), out, name)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def run_naive(sources: list[str], out: Path) -> None:
    for index, source in enumerate(sources):
        naive_one(source, out / str(index))


def run_floor(sources: list[str], out: Path, workers: int) -> None:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(floor_one, source, out / str(index)) for index, source in enumerate(sources)
        ]
        for future in futures:
            future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("kind", choices=("naive", "floor"))
    parser.add_argument("out", type=Path)
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.kind == "naive":
        run_naive(args.sources, args.out)
    else:
        run_floor(args.sources, args.out, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
