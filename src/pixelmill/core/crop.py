"""How a preset frames the upright source: the whole image (fit inside) or a crop (cover).

Sizes are decided from the source's geometry alone (before decoding); where a cover crop
sits along its free axis is decided from the pixels: the middle (``center``), the most
salient window (``attention``) or the busiest one (``entropy``), both judged on a copy of
at most ``ANALYSIS_SIDE`` pixels so the choice costs a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from pixelmill.core.imaging import fit_size
from pixelmill.core.specs import Fit, Gravity, Preset

# The longer side of the copy gravity is judged on.
ANALYSIS_SIDE = 256
# smartcrop scores an 8x downsampled feature map: windows narrower than this are not judged.
_MIN_ANALYSED_SIDE = 16
# Entropy is measured over at most this many window positions along the free axis.
_ENTROPY_POSITIONS = 48


@dataclass(frozen=True)
class Framing:
    """One preset's rendition of an upright ``width`` x ``height`` source.

    ``crop`` is the size of the source region it shows, in source pixels (the whole image
    for fit inside); ``frame`` is the size the whole source has at the rendition's scale,
    what decoding and the resize cascade must keep detail for.
    """

    size: tuple[int, int]
    crop: tuple[float, float]
    frame: tuple[int, int]

    @property
    def crops(self) -> bool:
        return self.size != self.frame


def framing(width: int, height: int, preset: Preset) -> Framing:
    """How ``preset`` renders an upright ``width`` x ``height`` source (never upscaled).

    Cover fills the box exactly; a source smaller than the box is cropped to the box's
    aspect ratio instead, at its own scale (a plain crop, no resampling).
    """
    if preset.fit is Fit.INSIDE:
        size = fit_size(width, height, preset.width, preset.height)
        return Framing(size, (float(width), float(height)), size)
    aspect = preset.width / preset.height
    if width / height > aspect:
        crop_width, crop_height = height * aspect, float(height)
    else:
        crop_width, crop_height = float(width), width / aspect
    if crop_width > preset.width:
        scale = preset.width / crop_width
        frame = (max(1, round(width * scale)), max(1, round(height * scale)))
        return Framing((preset.width, preset.height), (crop_width, crop_height), frame)
    size = (min(width, max(1, round(crop_width))), min(height, max(1, round(crop_height))))
    return Framing(size, (float(size[0]), float(size[1])), (width, height))


def decode_side(width: int, height: int, presets: Sequence[Preset]) -> int:
    """The longest side decoding must keep for ``presets``: the largest box, or more where
    a cover crop shows part of the source at a larger scale. Either orientation of a
    ``width`` x ``height`` header counts, so it holds before the EXIF tag is read."""
    sides = [max(p.width, p.height) for p in presets]
    for preset in presets:
        if preset.fit is Fit.COVER:
            for w, h in ((width, height), (height, width)):
                sides.append(max(framing(w, h, preset).frame))
    return max(sides)


def preset_size(width: int, height: int, preset: Preset) -> tuple[int, int]:
    """The size of ``preset``'s rendition of an upright ``width`` x ``height`` source."""
    return framing(width, height, preset).size


def crop_box(
    width: int,
    height: int,
    framed: Framing,
    gravity: Gravity,
    analysis: Image.Image | None = None,
) -> tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of the upright source a rendition shows.

    ``analysis`` is a small upright copy of the source, needed for attention and entropy
    (center, or nothing to choose, does without it).
    """
    crop_width, crop_height = framed.crop
    spare_x, spare_y = width - crop_width, height - crop_height
    fraction_x = fraction_y = 0.5
    if analysis is not None and gravity is not Gravity.CENTER and (spare_x > 0 or spare_y > 0):
        fraction_x, fraction_y = _focus(analysis, crop_width / width, crop_height / height, gravity)
    left, top = spare_x * fraction_x, spare_y * fraction_y
    if framed.size == (round(crop_width), round(crop_height)) and framed.frame == (width, height):
        left, top = float(round(left)), float(round(top))  # a plain crop: whole pixels
    return left, top, left + crop_width, top + crop_height


def analysis_copy(image: Image.Image) -> Image.Image:
    """``image`` shrunk to at most ANALYSIS_SIDE pixels a side, in RGB."""
    size = fit_size(image.width, image.height, ANALYSIS_SIDE, ANALYSIS_SIDE)
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return small if small.mode == "RGB" else small.convert("RGB")


def _focus(
    image: Image.Image, width_share: float, height_share: float, gravity: Gravity
) -> tuple[float, float]:
    """Where along the free axis the window of the given shares of ``image`` is best
    placed, as the fraction (0: first edge, 1: far edge) of the spare room on each axis."""
    window = (
        min(image.width, max(1, round(width_share * image.width))),
        min(image.height, max(1, round(height_share * image.height))),
    )
    spare = (image.width - window[0], image.height - window[1])
    if spare == (0, 0) or min(window) < _MIN_ANALYSED_SIDE:
        return 0.5, 0.5  # nothing to choose, or too small to judge: the middle
    if gravity is Gravity.ATTENTION:
        left, top = _attention_offset(image, window)
    else:
        left, top = _entropy_offset(image, window, spare)
    return (left / spare[0] if spare[0] else 0.5, top / spare[1] if spare[1] else 0.5)


def _attention_offset(image: Image.Image, window: tuple[int, int]) -> tuple[int, int]:
    """smartcrop's choice (smartcrop.js's scoring: skin, saturation and edges, weighted
    towards the window's middle and thirds). Deterministic: the first best window wins."""
    from smartcrop import SmartCrop  # numpy comes with it: imported only when needed

    found = SmartCrop().analyse(
        image, window[0], window[1], max_scale=1, min_scale=1, num_scale_steps=1, step=8
    )
    best = found["top_crop"]
    return int(best["x"]), int(best["y"])


def _entropy_offset(
    image: Image.Image, window: tuple[int, int], spare: tuple[int, int]
) -> tuple[int, int]:
    """The window position with the highest Shannon entropy of its histogram; among equals,
    the one nearest the middle."""
    horizontal = spare[0] >= spare[1]
    room = spare[0] if horizontal else spare[1]
    step = max(1, -(-room // _ENTROPY_POSITIONS))
    positions = sorted({*range(0, room + 1, step), room}, key=lambda p: abs(2 * p - room))
    best, best_entropy = room // 2, -1.0
    for position in positions:
        left, top = (position, 0) if horizontal else (0, position)
        entropy = image.crop((left, top, left + window[0], top + window[1])).entropy()
        if entropy > best_entropy + 1e-9:
            best, best_entropy = position, entropy
    return (best, 0) if horizontal else (0, best)
