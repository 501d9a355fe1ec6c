"""Encode a rendition and write it atomically (temp file in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from pixelmill.core.specs import OutputFormat

TEMP_PREFIX = ".pixelmill-tmp-"

_PILLOW_NAME = {
    OutputFormat.JPEG: "JPEG",
    OutputFormat.WEBP: "WEBP",
    OutputFormat.AVIF: "AVIF",
    OutputFormat.PNG: "PNG",
}


# Encoder settings chosen by measurement (docs/performance.md, `python -m bench.encoders`):
# the least encode time at no more bytes and the same quality as the encoders' defaults.
# WebP's method 3 is as small as its default 4 on large renditions and ~7 % quicker; on
# smaller ones it saves nothing. Huffman optimisation makes thumbnail-sized JPEGs ~10 %
# smaller and no slower; on larger ones it costs more time than the bytes are worth here.
WEBP_FAST_METHOD_MIN_PIXELS = 1_000_000
WEBP_FAST_METHOD = 3
JPEG_OPTIMIZE_MAX_PIXELS = 100_000


def encoder_options(fmt: OutputFormat, quality: int, pixels: int = 0) -> dict[str, Any]:
    """Encoder settings for a rendition of ``pixels`` pixels; no metadata is ever passed,
    so EXIF, XMP, ICC and comments are gone."""
    if fmt is OutputFormat.PNG:
        return {"optimize": False}
    options: dict[str, Any] = {"quality": quality}
    if fmt is OutputFormat.WEBP and pixels >= WEBP_FAST_METHOD_MIN_PIXELS:
        options["method"] = WEBP_FAST_METHOD
    elif fmt is OutputFormat.JPEG and 0 < pixels <= JPEG_OPTIMIZE_MAX_PIXELS:
        options["optimize"] = True
    return options


@lru_cache(maxsize=1)
def process_umask() -> int:
    """This process's umask, read once without changing it where the kernel tells it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # No /proc: set and restore at once (a thread creating a file in between would get 022).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of every file we write: readable by others as the umask allows (0644 under
    022), so a web server running as another user can serve it; mkstemp alone gives 0600."""
    return 0o666 & ~process_umask()


def write_atomically(path: Path, write: Any) -> int:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it into place.

    Returns the size in bytes. On any failure the temp file is removed. The file gets
    ``file_mode()`` before the rename, so it is never visible with other permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), file_mode())
            write(file)
            size = file.tell()
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    return size


# The most EXIF bytes one JPEG APP1 segment holds (Pillow refuses more).
JPEG_EXIF_LIMIT = 65533


def save_rendition(
    image: Image.Image, path: Path, fmt: OutputFormat, quality: int, exif: bytes | None = None
) -> int:
    """Encode ``image`` as ``fmt`` into ``path`` atomically; return the byte count.

    Only ``exif`` (when given) is written: nothing of the source's metadata rides along.
    EXIF longer than a JPEG segment holds (64 KB) is left out of JPEGs, kept in the others.
    """
    image.info = {}
    options = encoder_options(fmt, quality, image.width * image.height)
    if exif and not (fmt is OutputFormat.JPEG and len(exif) > JPEG_EXIF_LIMIT):
        options["exif"] = exif  # too long for a JPEG's one EXIF segment: left out of JPEGs
    return write_atomically(path, lambda file: image.save(file, _PILLOW_NAME[fmt], **options))


def remove_temp_files(folder: Path) -> int:
    """Remove temp files a killed writer may have left in ``folder``; return how many."""
    removed = 0
    with contextlib.suppress(OSError):  # no folder (or not a folder): nothing to remove
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
