"""Magic-byte sniffing: the first bytes decide the format, never the file name."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from images import pattern
from pixelmill.core import Limits, probe
from pixelmill.core.sniff import HEADER_BYTES, SourceFormat, sniff


def _encoded(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    pattern(40, 30).save(buffer, fmt, **options)
    return buffer.getvalue()


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    """An ISO-BMFF ``ftyp`` box (what HEIF and AVIF files start with), then padding."""
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00" * 32


@pytest.mark.parametrize(
    ("fmt", "options", "expected"),
    [
        ("JPEG", {}, SourceFormat.JPEG),
        ("PNG", {}, SourceFormat.PNG),
        ("GIF", {}, SourceFormat.GIF),
        ("WEBP", {}, SourceFormat.WEBP),
        ("WEBP", {"lossless": True}, SourceFormat.WEBP),
        ("TIFF", {}, SourceFormat.TIFF),
        ("BMP", {}, SourceFormat.BMP),
        ("AVIF", {}, SourceFormat.AVIF),
    ],
)
def test_encoded_image_is_recognised(fmt: str, options: dict[str, object], expected: str) -> None:
    """Files Pillow writes in each accepted format are sniffed as that format."""
    assert sniff(_encoded(fmt, **options)[:HEADER_BYTES]) == expected


def test_big_endian_tiff_is_recognised() -> None:
    """A big-endian (MM) TIFF header is TIFF as well as a little-endian (II) one."""
    assert sniff(b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 20) == SourceFormat.TIFF
    assert sniff(b"II*\x00\x08\x00\x00\x00" + b"\x00" * 20) == SourceFormat.TIFF


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), SourceFormat.HEIF),
        (_ftyp(b"heix", b"mif1"), SourceFormat.HEIF),
        (_ftyp(b"mif1", b"mif1", b"heic"), SourceFormat.HEIF),
        (_ftyp(b"mif1", b"miaf", b"MiHB"), SourceFormat.HEIF),
        (_ftyp(b"avif", b"mif1", b"miaf"), SourceFormat.AVIF),
        (_ftyp(b"avis", b"msf1", b"avif"), SourceFormat.AVIF),
        (_ftyp(b"mif1", b"avif", b"miaf"), SourceFormat.AVIF),
        (_ftyp(b"isom", b"iso2", b"mp41"), None),
        (_ftyp(b"qt  ", b"qt  "), None),
        (_ftyp(b"crx ", b"crx "), None),
    ],
    ids=["heic", "heix", "mif1+heic", "mif1", "avif", "avis", "mif1+avif", "mp4", "mov", "cr3"],
)
def test_iso_bmff_brands(header: bytes, expected: SourceFormat | None) -> None:
    """HEIF and AVIF are told apart by their ftyp brands; video and raw files are refused."""
    assert sniff(header[:HEADER_BYTES]) == expected


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"\xff\xd8",  # too short for a JPEG marker
        b"\x89PNG\r\n\x1a",  # PNG signature cut short
        b"\x89PNG\n\r\x1a\n",  # line endings translated in transit
        b"GIF88a" + b"\x00" * 10,
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"BM",  # a BMP signature with no header behind it
        b"%PDF-1.7\n",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"<?php phpinfo(); ?>",
        b"\x00\x00\x01\x00\x01\x00",  # ICO
        b"8BPS\x00\x01",  # Photoshop
    ],
)
def test_other_bytes_are_not_an_image(header: bytes) -> None:
    """Anything that is not one of the accepted formats sniffs as None."""
    assert sniff(header) is None


def test_real_heic_and_avif_files_are_recognised(tmp_path: Path) -> None:
    """A HEIC written by pillow-heif and an AVIF written by Pillow sniff as HEIF and AVIF."""
    pillow_heif = pytest.importorskip("pillow_heif")
    heif = pillow_heif.from_pillow(pattern(40, 30))
    buffer = io.BytesIO()
    heif.save(buffer, format="HEIF", quality=50)
    assert sniff(buffer.getvalue()[:HEADER_BYTES]) == SourceFormat.HEIF
    assert sniff(_encoded("AVIF")[:HEADER_BYTES]) == SourceFormat.AVIF


@pytest.mark.parametrize("name", ["photo.png", "photo.gif", "photo", "photo.txt", "a.jpg.exe"])
def test_file_name_never_matters(name: str, tmp_path: Path) -> None:
    """A JPEG probes as JPEG whatever its name or extension."""
    path = tmp_path / name
    path.write_bytes(_encoded("JPEG"))
    assert probe(path, Limits()).format == SourceFormat.JPEG


def test_png_named_jpg_is_a_png(tmp_path: Path) -> None:
    """A PNG under a .jpg name probes as PNG and opens with the PNG decoder only."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encoded("PNG"))
    info = probe(path, Limits())
    assert (info.format, info.width, info.height) == (SourceFormat.PNG, 40, 30)
    with Image.open(path) as image:
        assert image.format == "PNG"
