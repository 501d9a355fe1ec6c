"""Benchmark inputs: the corpus photos, and large or many images generated from one of them.

Generated files go to a cache outside the repository (``PIXELMILL_BENCH_CACHE``, default
``/tmp/pixelmill-bench-cache``) and are reused between runs; they are never committed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
CORPUS_PHOTOS = REPO.parent / "shared" / "corpus" / "photos"
SEED_PHOTO = "2569067123_aca715a2ee_o.jpg"
CACHE = Path(os.environ.get("PIXELMILL_BENCH_CACHE", "/tmp/pixelmill-bench-cache"))

HUGE_SIDE = 10_000  # 10000 x 10000 = 100 MP, exactly the default pixel limit (inclusive)
HUGE_COUNT = 4
BIG_JPEG_SIZE = (8000, 6000)  # 48 MP
BIG_JPEG_QUALITY = 90
MANY_COUNT = 200
MANY_SIZE = (1600, 1200)


def corpus_photos(folder: Path = CORPUS_PHOTOS) -> list[Path]:
    """Every image in the photos folder (the licence .txt is not an image)."""
    if not folder.is_dir():
        raise SystemExit(f"corpus not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() != ".txt")


def _cached(path: Path, make: Callable[[Path], None]) -> Path:
    """Build ``path`` once (atomically, so an interrupted build is not reused)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.partial")
        make(temp)
        temp.replace(path)
    return path


def _seed() -> Image.Image:
    with Image.open(CORPUS_PHOTOS / SEED_PHOTO) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


_VARIANTS: tuple[Callable[[Image.Image], Image.Image], ...] = (
    lambda image: image,
    lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    lambda image: image.transpose(Image.Transpose.ROTATE_180),
    lambda image: Image.merge("RGB", image.split()[::-1]),  # channels swapped: a tint
)


def huge_pngs() -> list[Path]:
    """Four distinct 10000 x 10000 PNGs (100 MP each).

    NEAREST upscaling repeats rows and columns, which PNG's filters compress well, so each
    file stays far below the default 100 MiB per-file limit while decoding to 100 MP.
    """
    paths = [CACHE / f"huge-{i}-{HUGE_SIDE}x{HUGE_SIDE}.png" for i in range(HUGE_COUNT)]
    if all(p.exists() for p in paths):
        return paths
    seed = _seed()
    for variant, path in zip(_VARIANTS, paths, strict=True):

        def make(temp: Path, variant: Callable[[Image.Image], Image.Image] = variant) -> None:
            big = variant(seed).resize((HUGE_SIDE, HUGE_SIDE), Image.Resampling.NEAREST)
            big.save(temp, "PNG", compress_level=1)

        _cached(path, make)
    return paths


def big_jpeg() -> Path:
    """One 8000 x 6000 JPEG (48 MP), quality 90."""

    def make(temp: Path) -> None:
        big = _seed().resize(BIG_JPEG_SIZE, Image.Resampling.BICUBIC)
        big.save(temp, "JPEG", quality=BIG_JPEG_QUALITY)

    return _cached(CACHE / "big-8000x6000-q90.jpg", make)


def many_jpegs() -> list[Path]:
    """200 distinct 1600 x 1200 JPEGs: crops of the seed photo at different offsets."""
    folder = CACHE / f"many-{MANY_COUNT}"
    paths = [folder / f"many-{i:03d}.jpg" for i in range(MANY_COUNT)]
    if all(p.exists() for p in paths):
        return paths
    seed = _seed()
    span_x = seed.width - MANY_SIZE[0]
    span_y = seed.height - MANY_SIZE[1]
    for i, path in enumerate(paths):
        left = (i * 37) % span_x
        top = (i * 53) % span_y

        def make(temp: Path, left: int = left, top: int = top) -> None:
            crop = seed.crop((left, top, left + MANY_SIZE[0], top + MANY_SIZE[1]))
            crop.save(temp, "JPEG", quality=92)

        _cached(path, make)
    return paths


SMALL_COUNT = 10
SMALL_SIZE = (1024, 768)


def small_jpegs() -> list[Path]:
    """Ten distinct 1024 x 768 JPEGs (a phone picture sent by a messenger): the seed photo
    cropped at different offsets and halved. A run of them is a fraction of a second of
    work, so a command's fixed cost (imports, pool start, shutdown) shows."""
    folder = CACHE / f"small-{SMALL_COUNT}"
    paths = [folder / f"small-{i:02d}.jpg" for i in range(SMALL_COUNT)]
    if all(p.exists() for p in paths):
        return paths
    seed = _seed()
    crop_w, crop_h = SMALL_SIZE[0] * 2, SMALL_SIZE[1] * 2
    span_x, span_y = seed.width - crop_w, seed.height - crop_h
    for i, path in enumerate(paths):
        left = (i * 61) % span_x
        top = (i * 43) % span_y

        def make(temp: Path, left: int = left, top: int = top) -> None:
            crop = seed.crop((left, top, left + crop_w, top + crop_h))
            crop.resize(SMALL_SIZE, Image.Resampling.LANCZOS).save(temp, "JPEG", quality=88)

        _cached(path, make)
    return paths


TWELVE_MP_SIZE = (4000, 3000)  # a 12-MP camera photo
TWELVE_MP_QUALITY = 90


def twelve_mp_jpegs(count: int = 20) -> list[Path]:
    """``count`` distinct 4000 x 3000 JPEGs (q90): the seed photo upscaled from a 4:3 crop.

    Each one is a slightly different crop, every other one mirrored, and tinted a little
    differently (the red channel scaled by up to ±3 %), so no two share a SHA-256 and no
    upload is answered as a duplicate. Cached one file at a time: asking for more later
    makes only the missing ones.
    """
    folder = CACHE / "twelve-mp"
    paths = [folder / f"twelve-{i:02d}-4000x3000-q90.jpg" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    seed = _seed()
    for i, path in enumerate(paths):
        crop_w = min(seed.width, seed.height * 4 // 3) - (i % 5) * 40
        crop_h = crop_w * 3 // 4
        left = (i * 37) % (seed.width - crop_w + 1)
        top = (i * 53) % (seed.height - crop_h + 1)
        red = 1 + ((i % 7) - 3) / 100

        def make(
            temp: Path,
            box: tuple[int, int, int, int] = (left, top, left + crop_w, top + crop_h),
            mirror: bool = i % 2 == 1,
            red: float = red,
        ) -> None:
            image = seed.crop(box).resize(TWELVE_MP_SIZE, Image.Resampling.BICUBIC)
            if mirror:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            r, g, b = image.split()
            image = Image.merge("RGB", (r.point(lambda v: min(255, round(v * red))), g, b))
            image.save(temp, "JPEG", quality=TWELVE_MP_QUALITY)

        _cached(path, make)
    return paths
