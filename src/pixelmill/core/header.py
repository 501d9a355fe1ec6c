"""Read an image's size and mode from its header, parsing bytes in Python only.

This runs in the service process (the engine's admission estimates each image's cost), so
it must never hand untrusted bytes to native code: Pillow's JPEG, PNG, GIF, BMP and TIFF
plugins read their headers in Python (their classes are used directly, so Pillow never
loads its other plugins, libwebp's or libavif's included); WebP's RIFF chunks and
HEIF/AVIF's ISOBMFF boxes are read here. All decoding happens in worker processes.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import PIL
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)
from PIL.ImageFile import ImageFile

from pixelmill.core.isobmff import read_image_size
from pixelmill.core.sniff import SourceFormat
from pixelmill.errors import CorruptImage, ImageError, TooManyPixels

# Whatever Pillow and its plugins raise on damaged data. Anything else is a bug of ours.
DECODER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    SyntaxError,
    EOFError,
    MemoryError,
    OverflowError,
    ZeroDivisionError,
    AttributeError,
    RuntimeError,
    AssertionError,
    struct.error,
    __import__("zlib").error,
)

# Where the imaging libraries' Python code lives: an exception raised there is theirs.
_LIBRARY_FOLDERS = (os.path.dirname(PIL.__file__) + os.sep,)
_LIBRARY_PACKAGES = (f"{os.sep}pillow_heif{os.sep}",)

_PLUGIN_CLASSES: dict[SourceFormat, type[ImageFile]] = {
    SourceFormat.JPEG: JpegImagePlugin.JpegImageFile,
    SourceFormat.PNG: PngImagePlugin.PngImageFile,
    SourceFormat.GIF: GifImagePlugin.GifImageFile,
    SourceFormat.BMP: BmpImagePlugin.BmpImageFile,
    SourceFormat.TIFF: TiffImagePlugin.TiffImageFile,
}


@dataclass(frozen=True)
class Header:
    """What a header states: the stored size and the pixel mode a decoder will produce."""

    width: int
    height: int
    mode: str
    # Pixels the decoder allocates when more than width x height (a HEIF crop, clap).
    decoded_pixels: int = 0


def read_header(stream: BinaryIO, fmt: SourceFormat) -> Header:
    """The header of ``stream`` (a ``fmt`` file, by its magic bytes). Raises CorruptImage."""
    stream.seek(0)
    try:
        if fmt is SourceFormat.WEBP:
            return _webp_header(stream)
        if fmt in (SourceFormat.HEIF, SourceFormat.AVIF):
            # Pillow's AVIF plugin keeps irot/imir as an EXIF orientation; libheif applies them.
            found = read_image_size(stream, apply_transforms=fmt is SourceFormat.HEIF)
            mode = ("LA" if found.has_alpha else "L") if found.grey else "RGB"
            alpha_or_mode = "RGBA" if found.has_alpha else mode
            return Header(found.width, found.height, alpha_or_mode, found.coded_pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = _PLUGIN_CLASSES[fmt](stream)
        try:
            return Header(image.width, image.height, image.mode)
        finally:
            image.close()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"declared size is over the pixel limit ({exc})") from None
    except DECODER_ERRORS as exc:
        raise CorruptImage(f"cannot read the {fmt.value} header: {describe(exc)}") from None


_WEBP_HEADER_BYTES = {b"VP8X": 10, b"VP8L": 5, b"VP8 ": 10}


def _webp_header(stream: BinaryIO) -> Header:
    """The canvas size and mode from the first chunk (VP8X, VP8L or VP8) of a WebP file."""
    head = stream.read(30)
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise CorruptImage("the WebP header is damaged")
    chunk = head[12:16]
    body = head[20:30]
    if len(body) < _WEBP_HEADER_BYTES.get(chunk, 0):
        raise CorruptImage("the WebP header is truncated")
    if chunk == b"VP8X":
        flags = body[0]
        width = 1 + int.from_bytes(body[4:7], "little")
        height = 1 + int.from_bytes(body[7:10], "little")
        return Header(width, height, "RGBA" if flags & 0x10 else "RGB")
    if chunk == b"VP8L":
        if body[0] != 0x2F:
            raise CorruptImage("the WebP lossless signature is wrong")
        bits = int.from_bytes(body[1:5], "little")
        width = 1 + (bits & 0x3FFF)
        height = 1 + ((bits >> 14) & 0x3FFF)
        return Header(width, height, "RGBA" if (bits >> 28) & 1 else "RGB")
    if chunk == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise CorruptImage("the WebP lossy start code is wrong")
        width = int.from_bytes(body[6:8], "little") & 0x3FFF
        height = int.from_bytes(body[8:10], "little") & 0x3FFF
        return Header(width, height, "RGB")
    raise CorruptImage(f"the WebP file starts with an unknown chunk {chunk!r}")


def raised_by_library(exc: BaseException) -> bool:
    """True when ``exc`` was raised inside Pillow or pillow_heif (its innermost frame is
    theirs): on decoded pixels that means the data was inconsistent, not that we erred."""
    frame = exc.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    filename = frame.tb_frame.f_code.co_filename
    return filename.startswith(_LIBRARY_FOLDERS) or any(p in filename for p in _LIBRARY_PACKAGES)


def describe(exc: BaseException) -> str:
    """A one-line, traceback-free description of a decoder error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
