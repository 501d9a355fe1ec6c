"""Decide an image's format from its first bytes, never from its name or declared type."""

from __future__ import annotations

from enum import StrEnum

HEADER_BYTES = 64


class SourceFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"
    WEBP = "webp"
    TIFF = "tiff"
    BMP = "bmp"
    HEIF = "heif"
    AVIF = "avif"

    @property
    def pillow_formats(self) -> tuple[str, ...]:
        """Pillow plugin names allowed to open this format (nothing else may)."""
        return _PILLOW_FORMATS[self]


_PILLOW_FORMATS: dict[SourceFormat, tuple[str, ...]] = {
    SourceFormat.JPEG: ("JPEG",),  # its factory opens MPO files too
    SourceFormat.PNG: ("PNG",),
    SourceFormat.GIF: ("GIF",),
    SourceFormat.WEBP: ("WEBP",),
    SourceFormat.TIFF: ("TIFF",),
    SourceFormat.BMP: ("BMP",),
    SourceFormat.HEIF: ("HEIF",),
    SourceFormat.AVIF: ("AVIF",),
}

_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2"}  # "some HEIF-family image": look further
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS |= _GENERIC_BRANDS
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff(header: bytes) -> SourceFormat | None:
    """Return the format the magic bytes announce, or None when they announce none we take."""
    if header.startswith(b"\xff\xd8\xff"):
        return SourceFormat.JPEG
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return SourceFormat.PNG
    if header[:6] in (b"GIF87a", b"GIF89a"):
        return SourceFormat.GIF
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return SourceFormat.WEBP
    if header[:4] in (b"II*\x00", b"MM\x00*"):
        return SourceFormat.TIFF
    if header[:2] == b"BM" and len(header) >= 26:
        return SourceFormat.BMP
    if header[4:8] == b"ftyp":
        return _sniff_isobmff(header)
    return None


def _sniff_isobmff(header: bytes) -> SourceFormat | None:
    box_size = int.from_bytes(header[0:4], "big")
    major = header[8:12]
    end = min(max(box_size, 16), len(header))
    brands = {major} | {header[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return SourceFormat.AVIF
    if major in _HEIF_BRANDS - _GENERIC_BRANDS:
        return SourceFormat.HEIF
    if brands & _AVIF_BRANDS:
        return SourceFormat.AVIF
    if brands & _HEIF_BRANDS:
        return SourceFormat.HEIF
    return None
