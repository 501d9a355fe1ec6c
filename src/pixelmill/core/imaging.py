"""Pixel operations: fit a box, shrink in strips, orient, convert to sRGB, flatten alpha."""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache

from PIL import Image, ImageCms

# The 8-bit modes every later step works in.
WORKING_MODES = {"L", "LA", "RGB", "RGBA", "CMYK"}
REDUCING_GAP = 2.0
# Shrinking converts and reduces this many rows at a time, so a 100 MP image never has a
# second full-size copy in memory (mode conversion and premultiplied alpha both copy).
_STRIP_PIXELS = 4_000_000

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def fit_size(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The largest size with the source's aspect ratio inside the box, never upscaled."""
    scale = min(box_width / width, box_height / height, 1.0)
    return (
        min(box_width, width, max(1, round(width * scale))),
        min(box_height, height, max(1, round(height * scale))),
    )


def rendition_size(
    width: int, height: int, orientation: int, box_width: int, box_height: int
) -> tuple[int, int]:
    """The size of an upright rendition of a ``width`` x ``height`` source stored with
    EXIF ``orientation``, fitted inside the box."""
    if swaps_axes(orientation):
        width, height = height, width
    return fit_size(width, height, box_width, box_height)


def normalise_orientation(value: object) -> int:
    """EXIF orientation as 1..8; 0, missing and nonsense mean 1 (upright)."""
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def swaps_axes(orientation: int) -> bool:
    return orientation in (5, 6, 7, 8)


def orient(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def working_mode(mode: str, has_transparency: bool, grey_palette: bool = False) -> str:
    """The 8-bit mode ``mode`` is converted to before resizing (grey stays one channel)."""
    if mode in WORKING_MODES:
        return mode
    if mode in ("1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return "LA" if has_transparency else "L"
    if mode in ("P", "PA") and grey_palette:
        return "LA" if has_transparency or mode == "PA" else "L"
    if mode == "PA":
        return "RGBA"
    if mode == "P":
        return "RGBA" if has_transparency else "RGB"
    return "RGBA" if has_transparency or mode.endswith("A") else "RGB"


def has_grey_palette(image: Image.Image) -> bool:
    """True when every entry of a P/PA image's palette is a grey (r == g == b)."""
    if image.mode not in ("P", "PA"):
        return False
    try:
        palette = image.getpalette("RGB")
    except (ValueError, TypeError):
        return False
    if not palette:
        return False
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3))


def to_working_mode(image: Image.Image, target: str) -> Image.Image:
    if image.mode == target:
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit data scales to 8 bits (÷257); a plain convert would clip everything over 255.
        wide = image if image.mode == "I" else image.convert("I")
        image = wide.point(lambda value: value / 257).convert("L")
        return image if target == "L" else image.convert(target)
    if image.mode == "F":
        # Float pixels have no standard range; Pillow's own is 0..255 (what L -> F yields).
        image = image.convert("L")
        return image if target == "L" else image.convert(target)
    return image.convert(target)


def shrink(image: Image.Image, target: str, factor: int) -> Image.Image:
    """Convert to ``target`` and box-reduce by ``factor``, a strip of rows at a time."""
    width, height = image.size
    if factor <= 1 and image.mode == target:
        return image
    if image.mode == target and target not in ("LA", "RGBA"):
        return image.reduce(factor)  # no conversion, no premultiplied copy: one pass, no strips
    if width * height <= _STRIP_PIXELS:
        converted = to_working_mode(image, target)
        return converted.reduce(factor) if factor > 1 else converted
    out = Image.new(target, (-(-width // factor), -(-height // factor)))
    rows = max(factor, (_STRIP_PIXELS // width) // factor * factor)
    for top in range(0, height, rows):
        strip = to_working_mode(image.crop((0, top, width, min(height, top + rows))), target)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def reduce_factor(width: int, height: int, target_width: int, target_height: int) -> int:
    """The integer box-reduction that keeps at least REDUCING_GAP times the target size."""
    return max(1, int(min(width / target_width, height / target_height) / REDUCING_GAP))


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=16)
def _transform(
    profile_digest: str, icc: bytes, in_mode: str, out_mode: str
) -> ImageCms.ImageCmsTransform | None:
    del profile_digest  # part of the cache key only
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(source).strip().lower()
        if in_mode in ("RGB", "RGBA") and description.startswith("srgb"):
            return None  # already sRGB: transforming would only cost time
        return ImageCms.buildTransform(
            source, _srgb(), in_mode, out_mode, renderingIntent=ImageCms.Intent.PERCEPTUAL
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # an unreadable profile: fall back to a plain conversion


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to sRGB RGB or RGBA using the embedded profile (or a plain conversion);
    greyscale (L, LA) stays greyscale, its tones mapped through a grey profile if any."""
    if image.mode in ("L", "LA"):
        return _grey_to_srgb(image, icc)
    has_alpha = image.mode in ("LA", "RGBA")
    out_mode = "RGBA" if has_alpha else "RGB"
    if icc:
        in_mode = {"LA": "RGBA", "L": "L"}.get(image.mode, image.mode)
        source = image.convert("RGBA") if image.mode == "LA" else image
        transform = _transform(hashlib.sha1(icc).hexdigest(), icc, in_mode, out_mode)
        if transform is not None:
            try:
                converted = transform.apply(source)
            except (ImageCms.PyCMSError, ValueError):
                converted = None
            if converted is not None:
                if has_alpha and converted.mode == "RGBA":
                    converted.putalpha(source.getchannel("A"))
                return converted
    return image if image.mode == out_mode else image.convert(out_mode)


def _grey_to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Map grey tones through the embedded grey profile to sRGB's, keeping one channel."""
    if not icc:
        return image
    grey = image if image.mode == "L" else image.getchannel("L")
    transform = _transform(hashlib.sha1(icc).hexdigest(), icc, "L", "RGB")
    if transform is None:
        return image
    try:
        mapped = transform.apply(grey).convert("L")  # neutral greys: R == G == B
    except (ImageCms.PyCMSError, ValueError):
        return image
    return mapped if image.mode == "L" else Image.merge("LA", (mapped, image.getchannel("A")))


def is_opaque(image: Image.Image) -> bool:
    if image.mode not in ("RGBA", "LA"):
        return True
    extrema = image.getchannel("A").getextrema()
    return extrema[0] == 255


def without_alpha(image: Image.Image) -> Image.Image:
    """``image`` in the same colour mode minus its alpha channel (RGBA -> RGB, LA -> L)."""
    return image.convert({"RGBA": "RGB", "LA": "L"}.get(image.mode, image.mode))


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite transparent pixels onto ``background`` (for formats without alpha).

    Greyscale stays one channel unless the background has a colour.
    """
    grey_background = background[0] == background[1] == background[2]
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "LA" and grey_background:
        base = Image.new("L", image.size, background[0])
        base.paste(image.getchannel("L"), mask=image.getchannel("A"))
        return base
    if image.mode not in ("RGBA", "LA"):
        return image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    base = Image.new("RGB", image.size, background)
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base
