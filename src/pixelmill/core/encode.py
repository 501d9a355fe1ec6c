"""Encode a rendition and write it atomically (temp file in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
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


def encoder_options(fmt: OutputFormat, quality: int) -> dict[str, Any]:
    """Encoder settings; no metadata is ever passed, so EXIF, XMP, ICC and comments are gone."""
    if fmt is OutputFormat.PNG:
        return {"optimize": False}
    return {"quality": quality}


def write_atomically(path: Path, write: Any) -> int:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it into place.

    Returns the size in bytes. On any failure the temp file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            size = file.tell()
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    return size


def save_rendition(
    image: Image.Image, path: Path, fmt: OutputFormat, quality: int, exif: bytes | None = None
) -> int:
    """Encode ``image`` as ``fmt`` into ``path`` atomically; return the byte count.

    Only ``exif`` (when given) is written: nothing of the source's metadata rides along.
    """
    image.info = {}
    options = encoder_options(fmt, quality)
    if exif:
        options["exif"] = exif
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
