"""Open a source image: size limit, magic bytes, checksums, header and pixel limit.

Everything here happens before a single pixel is allocated.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from pixelmill.core.header import DECODER_ERRORS, Header, describe, read_header
from pixelmill.core.pngcheck import verify_png_crcs
from pixelmill.core.sniff import HEADER_BYTES, SourceFormat, sniff
from pixelmill.core.specs import Limits, SourceInfo
from pixelmill.errors import CorruptImage, FileTooLarge, TooManyPixels, UnsupportedFormat


@lru_cache(maxsize=1)
def _register_heif_decoder() -> None:
    """Let Pillow open HEIF through libheif; only where images are decoded (a worker)."""
    import pillow_heif  # native code: imported on first use, never by the header probe

    pillow_heif.register_heif_opener()


_BYTES_PER_PIXEL = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "PA": 2,
    "La": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "RGBA": 4,
    "RGBa": 4,
    "RGBX": 4,
    "CMYK": 4,
    "I": 4,
    "F": 4,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
}
# Frames are counted only where the container states them; walking frames of a GIF or a
# TIFF could take minutes on a frame flood.
_FRAME_COUNT_IN_HEADER = {
    SourceFormat.PNG,
    SourceFormat.WEBP,
    SourceFormat.AVIF,
    SourceFormat.HEIF,
    SourceFormat.JPEG,
}


@dataclass(frozen=True)
class Probe:
    """What the header says, and what decoding will cost."""

    format: SourceFormat
    width: int
    height: int
    mode: str
    bytes: int
    decode_bytes: int  # estimated peak memory of decoding and shrinking this image

    @property
    def pixels(self) -> int:
        return self.width * self.height


@contextmanager
def open_source(
    path: str | os.PathLike[str],
    limits: Limits,
    largest_box: int = 1920,
    verify_checksums: bool = True,
) -> Iterator[tuple[Image.Image, Probe]]:
    """Open ``path`` header-only, enforce limits, verify checksums; yield the lazy image.

    ``largest_box`` is the longest side any rendition may have; it sizes the memory estimate.
    This hands the bytes to Pillow's decoders (native code): call it in a worker process.
    """
    with _opened(path, limits) as (stream, fmt, size):
        if fmt in (SourceFormat.HEIF, SourceFormat.AVIF):
            # libheif/libavif parse the whole file on open: check the size they will state
            # (in Python) first, so an oversized image never reaches them.
            _check_size(read_header(stream, fmt), limits)
            _register_heif_decoder()
        if fmt is SourceFormat.PNG and verify_checksums:
            verify_png_crcs(stream)
        stream.seek(0)
        image = _open_header(stream, fmt, limits)
        try:
            cost = estimate_decode_bytes(image.width, image.height, image.mode, fmt, largest_box)
            yield image, Probe(fmt, image.width, image.height, image.mode, size, cost)
        finally:
            image.close()


def probe(path: str | os.PathLike[str], limits: Limits, largest_box: int = 1920) -> Probe:
    """Read only the header: the format, the size and what decoding would cost.

    Safe in the service process: the header is parsed in Python only (see ``header``), and
    the file is not read whole (the render that follows verifies PNG checksums).
    """
    with _opened(path, limits) as (stream, fmt, size):
        found = _check_size(read_header(stream, fmt), limits)
        cost = estimate_decode_bytes(found.width, found.height, found.mode, fmt, largest_box)
        return Probe(fmt, found.width, found.height, found.mode, size, cost)


@contextmanager
def _opened(
    path: str | os.PathLike[str], limits: Limits
) -> Iterator[tuple[BinaryIO, SourceFormat, int]]:
    """The open file, its format by magic bytes and its size; limits on bytes enforced."""
    try:
        size = os.path.getsize(path)
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after the caller's block
    except OSError as exc:
        raise CorruptImage(f"cannot read the file: {exc.strerror or exc}") from None
    with stream:
        if size > limits.max_bytes:
            raise FileTooLarge(f"{size} bytes is over the limit of {limits.max_bytes} bytes")
        fmt = sniff(stream.read(HEADER_BYTES))
        if fmt is None:
            raise UnsupportedFormat("not a JPEG, PNG, GIF, WebP, TIFF, BMP, HEIF or AVIF file")
        yield stream, fmt, size


def _check_size(found: Header, limits: Limits) -> Header:
    if found.width < 1 or found.height < 1:
        raise CorruptImage(f"declared size {found.width}x{found.height} is empty")
    if found.width * found.height > limits.max_pixels:
        raise TooManyPixels(
            f"{found.width}x{found.height} = {found.width * found.height} pixels is over "
            f"the limit of {limits.max_pixels}"
        )
    if found.decoded_pixels > limits.max_pixels:
        # A cropped HEIF is decoded whole first: the crop does not shrink the allocation.
        raise TooManyPixels(
            f"{found.width}x{found.height} cropped from {found.decoded_pixels} coded pixels, "
            f"over the limit of {limits.max_pixels}"
        )
    return found


def _open_header(stream: BinaryIO, fmt: SourceFormat, limits: Limits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(stream, formats=list(fmt.pillow_formats))
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"declared size is over the pixel limit ({exc})") from None
    except UnidentifiedImageError:
        raise CorruptImage(f"the {fmt.value} header is damaged or incomplete") from None
    except DECODER_ERRORS as exc:
        raise CorruptImage(f"cannot read the {fmt.value} header: {describe(exc)}") from None
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise CorruptImage(f"declared size {width}x{height} is empty")
    if width * height > limits.max_pixels:
        image.close()
        raise TooManyPixels(
            f"{width}x{height} = {width * height} pixels is over the limit of {limits.max_pixels}"
        )
    return image


def estimate_decode_bytes(
    width: int, height: int, mode: str, fmt: SourceFormat, largest_box: int
) -> int:
    """Peak bytes to decode and shrink an image: pixels once as decoded, plus working room."""
    if fmt is SourceFormat.JPEG:
        scale = jpeg_draft_scale(width, height, 2 * largest_box)
        width, height = -(-width // scale), -(-height // scale)
    decoded = width * height * _BYTES_PER_PIXEL.get(mode, 4)
    # Shrinking works in strips and keeps a reduced copy of at most a quarter of the pixels.
    return decoded + width * height + 32 * 1024 * 1024


def jpeg_draft_scale(width: int, height: int, min_side: int) -> int:
    """The DCT scale (1, 2, 4 or 8) that keeps the longer side at least ``min_side``."""
    longer = max(width, height)
    scale = 1
    while scale < 8 and longer // (scale * 2) >= min_side:
        scale *= 2
    return scale


def source_info(image: Image.Image, probe: Probe, orientation: int) -> SourceInfo:
    """The manifest's facts about the source; its size is as displayed (after orientation)."""
    width, height = probe.width, probe.height
    if orientation in (5, 6, 7, 8):  # stored on its side: displayed with the axes swapped
        width, height = height, width
    return SourceInfo(
        format=probe.format.value,
        width=width,
        height=height,
        bytes=probe.bytes,
        orientation=orientation,
        mode=probe.mode,
        icc=bool(image.info.get("icc_profile")),
        frames=count_frames(image, probe.format),
    )


def count_frames(image: Image.Image, fmt: SourceFormat) -> int | None:
    try:
        if fmt in _FRAME_COUNT_IN_HEADER:
            return int(getattr(image, "n_frames", 1))
        return 1 if not getattr(image, "is_animated", False) else None
    except DECODER_ERRORS:
        return None
