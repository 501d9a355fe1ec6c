"""Render every rendition of one source from a single decode."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

from PIL import Image

from pixelmill.core import imaging
from pixelmill.core.crop import ANALYSIS_SIDE, Framing, analysis_copy, crop_box, framing
from pixelmill.core.encode import save_rendition
from pixelmill.core.header import DECODER_ERRORS, describe, raised_by_library
from pixelmill.core.parallel import Lanes, timed
from pixelmill.core.placeholder import PLACEHOLDER_SIDE, thumbhash_of
from pixelmill.core.sniff import SourceFormat
from pixelmill.core.source import Probe, jpeg_draft_scale, open_source, source_info
from pixelmill.core.specs import (
    Gravity,
    OutputFormat,
    Preset,
    RenderResult,
    RenderSpec,
    Rendition,
    Timings,
)
from pixelmill.errors import CorruptImage


def render_renditions(
    source_path: str | Path,
    out_dir: str | Path,
    spec: RenderSpec,
    sha256: str,
    *,
    only: frozenset[str] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    threads: int = 1,
) -> RenderResult:
    """Decode ``source_path`` once and write each rendition of ``spec`` into ``out_dir``.

    ``only`` limits the work to those file names (e.g. ``{"large.avif"}``); the result then
    lists just those (the placeholder is computed all the same). ``should_cancel`` is asked
    between renditions. ``threads`` > 1 resizes the largest rendition in strips and encodes
    side by side on that many threads (the same files as one thread). Raises an ImageError
    subclass for a bad image (``Cancelled`` when asked to stop); never leaves a partial file
    behind. An ``OSError`` from creating or writing files in ``out_dir`` (read-only folder,
    full disk) propagates unchanged: it is no fault of the image, so callers must not report
    it as one.
    """
    started = time.perf_counter()
    largest = max(max(p.width, p.height) for p in spec.presets)
    with open_source(source_path, spec.limits, largest) as (image, probe):
        read_done = time.perf_counter()
        # Decoders warn about damaged tags and EXIF on the console; the outcome says enough.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation = imaging.normalise_orientation(_exif_orientation(image))
            info = source_info(image, probe, orientation)
            exif = _kept_exif(image) if spec.keep_metadata else None
            icc = image.info.get("icc_profile") or None
            upright = _upright_size(probe, orientation)
            framings = {p.name: framing(*upright, p) for p in spec.presets}
            frames = {name: framed.frame for name, framed in framings.items()}
            # A cover crop shows part of the source at a larger scale than the box suggests.
            decode_side = max(largest, *(max(frame) for frame in frames.values()))
            try:
                _decode(image, probe, decode_side)
            except DECODER_ERRORS as exc:
                raise CorruptImage(
                    f"cannot decode the {probe.format.value} data: {describe(exc)}"
                ) from None
            decode_done = time.perf_counter()
            base = _prepare_decoded(image, icc, orientation, frames, probe)
            if base is not image:
                image.close()  # free the full-size pixels before encoding
            prepare_done = time.perf_counter()
        with Lanes(threads, should_cancel) as lanes:
            renditions, placeholder, resize_s, encode_s = _write_renditions(
                base, upright, framings, spec, Path(out_dir), only, lanes, exif
            )
    timings = Timings(
        read=(read_done - started) * 1000,
        decode=(decode_done - read_done) * 1000,
        resize=(prepare_done - decode_done + resize_s) * 1000,
        encode=encode_s * 1000,
        total=(time.perf_counter() - started) * 1000,
    )
    return RenderResult(sha256, info, tuple(renditions), timings, placeholder)


def _write_renditions(
    base: Image.Image,
    upright: tuple[int, int],
    framings: dict[str, Framing],
    spec: RenderSpec,
    out: Path,
    only: frozenset[str] | None,
    lanes: Lanes,
    exif: bytes | None,
) -> tuple[list[Rendition], str, float, float]:
    """Resize in a cascade (largest output first, each from a big enough earlier one), encode.

    Whole-image renditions come first, so a cover crop (and the placeholder) can be taken
    from the smallest of them that still has the detail, never from a crop. Resizes run on
    this thread; encodes run on ``lanes`` (here at once, or side by side with the resizes).
    The encode time returned is the sum of every encode's own time.
    """
    resize_s = 0.0
    made: list[Image.Image] = []  # whole-image renditions resized so far, largest first
    analysis: Image.Image | None = None
    for preset in _rendering_order(spec.presets, framings):
        lanes.check_cancel()
        t0 = time.perf_counter()
        framed = framings[preset.name]
        if framed.crops:
            if analysis is None and preset.gravity is not Gravity.CENTER:
                analysis = analysis_copy(_smallest_at_least(base, made, ANALYSIS_SIDE))
            box = crop_box(*upright, framed, preset.gravity, analysis)
            current = _cropped(_cascade_source(base, made, framed.frame), upright, box, framed.size)
        else:
            current = _resized(_cascade_source(base, made, framed.size), framed.size, lanes)
            made.append(current)
        resize_s += time.perf_counter() - t0
        for fmt in sorted(spec.formats_of(preset), key=_SLOWEST_FIRST.__getitem__):
            filename = f"{preset.name}.{fmt.extension}"
            if only is None or filename in only:
                # Pillow keeps each save's options on the image object: one object per
                # encode, sharing the pixels (which encoders only read). ``_new`` is how
                # Pillow itself wraps pixels; pyproject pins Pillow 13, where it is checked
                # by tests/test_core_parallel.py.
                own = current if lanes.threads == 1 else current._new(current.im)
                encode = partial(_encode, own, preset, fmt, framed.size, spec, out, exif)
                lanes.run(timed(encode))
    t0 = time.perf_counter()
    placeholder = thumbhash_of(_smallest_at_least(base, made, PLACEHOLDER_SIDE))
    resize_s += time.perf_counter() - t0
    encoded = cast(list[tuple[Rendition, float]], lanes.results())
    written = [rendition for rendition, _ in encoded]
    order = {name: i for i, name in enumerate(spec.rendition_names())}
    written.sort(key=lambda r: order[r.filename])
    return written, placeholder, resize_s, sum(seconds for _, seconds in encoded)


# Encodes of one rendition start with the slowest, so a helper thread takes that one first.
_SLOWEST_FIRST = {
    OutputFormat.AVIF: 0,
    OutputFormat.WEBP: 1,
    OutputFormat.PNG: 2,
    OutputFormat.JPEG: 3,
}


def _encode(
    image: Image.Image,
    preset: Preset,
    fmt: OutputFormat,
    size: tuple[int, int],
    spec: RenderSpec,
    out: Path,
    exif: bytes | None,
) -> Rendition:
    filename = f"{preset.name}.{fmt.extension}"
    encoded = image if fmt.keeps_alpha else imaging.flatten(image, spec.background)
    nbytes = save_rendition(encoded, out / filename, fmt, spec.quality_of(fmt, preset), exif)
    return Rendition(preset.name, fmt, *size, nbytes, filename)


def _rendering_order(presets: tuple[Preset, ...], framings: dict[str, Framing]) -> list[Preset]:
    """Whole-image renditions largest first, then crops largest first."""
    return sorted(
        presets,
        key=lambda p: (framings[p.name].crops, -_area(framings[p.name].size)),
    )


def _smallest_at_least(base: Image.Image, made: list[Image.Image], side: int) -> Image.Image:
    """The smallest whole-image rendition whose longer side is at least ``side`` (else the
    base image): what a small copy of the picture is best shrunk from."""
    for earlier in reversed(made):  # smallest first
        if max(earlier.size) >= side:
            return earlier
    return base


def _cropped(
    image: Image.Image,
    upright: tuple[int, int],
    box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> Image.Image:
    """The ``box`` of the upright source (in source pixels) from ``image``, a whole-image
    copy of it at any scale, resized to ``size``."""
    scale_x, scale_y = image.width / upright[0], image.height / upright[1]
    left, top, right, bottom = box
    scaled = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
    whole = (round(scaled[0]), round(scaled[1]), round(scaled[2]), round(scaled[3]))
    exact = all(abs(a - b) < 1e-6 for a, b in zip(scaled, whole, strict=True))
    if exact and (whole[2] - whole[0], whole[3] - whole[1]) == size:
        return image.crop(whole)  # a plain crop at the source's scale: no resampling
    return image.resize(
        size, Image.Resampling.LANCZOS, box=scaled, reducing_gap=imaging.REDUCING_GAP
    )


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _cascade_source(
    base: Image.Image, made: list[Image.Image], size: tuple[int, int]
) -> Image.Image:
    """The smallest image to resize ``size`` from without losing detail: an earlier
    rendition of exactly that size, or one at least twice as big on each side; else ``base``.

    Box areas do not order outputs (a wide box can give a bigger image than a square one),
    so each candidate is checked on both sides.
    """
    width, height = size
    for earlier in reversed(made):  # smallest first
        if earlier.size == size:
            return earlier
        if earlier.width >= 2 * width and earlier.height >= 2 * height:
            return earlier
    return base


def _resized(image: Image.Image, size: tuple[int, int], lanes: Lanes) -> Image.Image:
    if image.size == size:
        return image
    return lanes.resize(image, size, imaging.REDUCING_GAP)


# What a TIFF's first tag directory (which Pillow reads as its EXIF) holds besides EXIF:
# how the source's pixels are laid out, and its XMP, IPTC, Photoshop and ICC payloads.
# None of it describes a rendition; the payloads can be hundreds of KB.
_NOT_EXIF = frozenset(
    {0x00FE, 0x00FF, *range(0x0100, 0x0104), 0x0106, 0x0111, *range(0x0115, 0x0118), 0x011C}
    | {0x013D, 0x0140, *range(0x0142, 0x0146), 0x014A, 0x0152, 0x0153}
    | {0x02BC, 0x83BB, 0x8649, 0x8773}
)


def _kept_exif(image: Image.Image) -> bytes | None:
    """The source's EXIF without its orientation (renditions are upright already) and
    without what only describes the source file (see ``_NOT_EXIF``)."""
    try:
        exif = image.getexif()
        for tag in (0x0112, *_NOT_EXIF):
            exif.pop(tag, None)
        return exif.tobytes() if len(exif) else None
    except DECODER_ERRORS:
        return None  # unreadable EXIF is dropped, as when stripping


def _exif_orientation(image: Image.Image) -> object:
    try:
        return image.getexif().get(0x0112)
    except DECODER_ERRORS:
        return None  # unreadable EXIF: treat as upright


def _decode(image: Image.Image, probe: Probe, largest_box: int) -> None:
    """Load the first frame; a JPEG is DCT-scaled on load to at least 2x the largest box."""
    if probe.format is SourceFormat.JPEG:
        scale = jpeg_draft_scale(probe.width, probe.height, 2 * largest_box)
        if scale > 1:
            image.draft(None, (-(-probe.width // scale), -(-probe.height // scale)))
    image.load()


def _upright_size(probe: Probe, orientation: int) -> tuple[int, int]:
    """The source's size as displayed (after EXIF orientation)."""
    if imaging.swaps_axes(orientation):
        return probe.height, probe.width
    return probe.width, probe.height


def _prepare_decoded(
    decoded: Image.Image,
    icc: bytes | None,
    orientation: int,
    frames: dict[str, tuple[int, int]],
    probe: Probe,
) -> Image.Image:
    """``_prepare``, where Pillow refusing the decoded image (a palette image without a
    palette, say) is damaged data: corrupt_image. An error raised in our code stays a bug."""
    try:
        return _prepare(decoded, icc, orientation, frames)
    except DECODER_ERRORS as exc:
        if not raised_by_library(exc):
            raise
        raise CorruptImage(
            f"the decoded {probe.format.value} data is inconsistent: {describe(exc)}"
        ) from None


def _prepare(
    decoded: Image.Image, icc: bytes | None, orientation: int, frames: dict[str, tuple[int, int]]
) -> Image.Image:
    """Shrink the decoded pixels towards the largest rendition's whole frame (a cover crop
    shows only part of it), upright and in sRGB."""
    target = imaging.working_mode(
        decoded.mode, decoded.has_transparency_data, imaging.has_grey_palette(decoded)
    )
    largest = max(frames.values(), key=lambda s: s[0] * s[1])
    width, height = decoded.size
    if imaging.swaps_axes(orientation):
        largest = (largest[1], largest[0])
    factor = imaging.reduce_factor(width, height, *largest)
    shrunk = imaging.shrink(decoded, target, factor)
    upright = imaging.orient(shrunk, orientation)
    if upright.mode == "CMYK" and not icc:
        return upright.convert("RGB")
    srgb = imaging.to_srgb(upright, icc)
    if srgb.mode in ("RGBA", "LA") and imaging.is_opaque(srgb):
        srgb = imaging.without_alpha(srgb)
    srgb.info = {}
    return srgb
