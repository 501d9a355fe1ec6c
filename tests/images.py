"""Test images built in code, so the core's tests run without the corpus.

Every builder returns a Pillow image or writes a file and returns its path; nothing here
imports pixelmill, so the helpers can judge pixelmill's output independently.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageStat

ALL_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")

# Magic bytes of every format pixelmill writes, checked without Pillow or pixelmill.
_OUTPUT_MAGIC = {
    "jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    "png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "avif": lambda b: b[4:8] == b"ftyp" and b"avif" in b[8:32],
}


def format_by_magic(data: bytes) -> str | None:
    """The output format ``data`` is by its first bytes (jpeg, png, webp, avif), else None."""
    for name, matches in _OUTPUT_MAGIC.items():
        if matches(data):
            return name
    return None


def pattern(width: int, height: int) -> Image.Image:
    """An RGB image with no symmetry: any flip or rotation of it looks clearly different."""
    image = Image.new("RGB", (width, height), (30, 60, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 3, height // 4), fill=(230, 40, 40))
    draw.rectangle((width // 2, height // 2, width - 1, height - 1), fill=(40, 200, 60))
    draw.ellipse((width // 8, height // 2, width // 2, height - height // 8), fill=(250, 220, 0))
    return image


def in_mode(mode: str, width: int = 120, height: int = 80) -> Image.Image:
    """``pattern`` in ``mode``; P carries a transparent index, 16-bit and float span their range."""
    rgb = pattern(width, height)
    grey = rgb.convert("L")
    if mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = image.getpixel((0, 0))
        return image
    if mode == "LA":
        return Image.merge("LA", (grey, _corner_alpha(width, height)))
    if mode == "RGBA":
        return Image.merge("RGBA", (*rgb.split(), _corner_alpha(width, height)))
    if mode in ("I;16", "I"):
        return grey.convert("I").point(lambda v: v * 257).convert(mode)
    if mode == "F":
        return grey.convert("F")
    return rgb.convert(mode)


def _corner_alpha(width: int, height: int) -> Image.Image:
    """Alpha that is 0 in a band along the left and top edges and opaque elsewhere."""
    alpha = Image.new("L", (width, height), 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, width - 1, height // 5), fill=0)
    ImageDraw.Draw(alpha).rectangle((0, 0, width // 5, height - 1), fill=0)
    return alpha


def save(image: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    """Write ``image`` as ``fmt`` (a Pillow format name) to ``path``."""
    image.save(path, fmt, **options)
    return path


def source_file(folder: Path, mode: str, width: int = 120, height: int = 80) -> Path:
    """A file holding an image of ``mode`` in a format that stores that mode natively."""
    image = in_mode(mode, width, height)
    if mode in ("CMYK", "I", "F"):
        return save(image, folder / f"src-{_slug(mode)}.tif", "TIFF")
    return save(image, folder / f"src-{_slug(mode)}.png", "PNG")


def _slug(mode: str) -> str:
    return mode.replace(";", "_")


def transparent_square(size: int = 200) -> Image.Image:
    """RGBA: fully transparent (and black, so a wrong flatten shows) but an opaque red centre."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    quarter = size // 4
    ImageDraw.Draw(image).rectangle(
        (quarter, quarter, size - quarter, size - quarter), fill=(220, 20, 20, 255)
    )
    return image


def jpeg_with_gps(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    """A JPEG with EXIF (camera, orientation 1, GPS position), XMP and a comment."""
    exif = Image.Exif()
    exif[0x010F] = "PixelmillCam"  # Make
    exif[0x0112] = 1  # Orientation
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 12.5)
    gps[3] = "E"
    gps[4] = (4.0, 53.0, 40.1)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-xmp</rdf:RDF></x:xmpmeta>'
    pattern(*size).save(path, "JPEG", exif=exif, xmp=xmp, comment=b"secret-comment")
    return path


def animated_gif(path: Path, colours: list[tuple[int, int, int]], size: int = 64) -> Path:
    """An animated GIF whose frames are solid ``colours`` in order."""
    frames = [Image.new("RGB", (size, size), colour) for colour in colours]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def truncated_jpeg(path: Path, keep: float = 0.5) -> Path:
    """A valid JPEG cut after ``keep`` of its bytes."""
    buffer = io.BytesIO()
    pattern(400, 300).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel value of two same-size RGB images (0..255)."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def mean_colour(image: Image.Image) -> tuple[float, float, float]:
    """The mean (R, G, B) of ``image``."""
    red, green, blue = ImageStat.Stat(image.convert("RGB")).mean
    return (red, green, blue)


def colour_distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The largest per-channel difference of two colours."""
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
