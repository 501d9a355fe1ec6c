"""Opening a source: header-only probe, limits before pixels, PNG checksums, temp files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from images import pattern, save
from pixelmill.core import Limits, probe
from pixelmill.core.encode import TEMP_PREFIX, remove_temp_files, write_atomically
from pixelmill.core.pngcheck import verify_png_crcs
from pixelmill.core.sniff import SourceFormat
from pixelmill.core.source import jpeg_draft_scale, open_source
from pixelmill.errors import CorruptImage, ImageError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds just one row of data."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + _png_chunk(b"IEND", b"")


def test_probe_reads_the_header(tmp_path: Path) -> None:
    """probe reports format, size, mode, byte count and a positive memory estimate."""
    source = save(pattern(300, 200), tmp_path / "a.webp", "WEBP")
    info = probe(source, Limits())
    assert (info.format, info.width, info.height, info.mode) == (
        SourceFormat.WEBP,
        300,
        200,
        "RGB",
    )
    assert info.bytes == source.stat().st_size
    assert info.pixels == 60_000
    assert info.decode_bytes >= 60_000 * 3


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    """A PNG declaring 20000 x 20000 fails too_many_pixels with no pixel buffer allocated."""
    source = tmp_path / "bomb.png"
    source.write_bytes(_png_header_only(20_000, 20_000))
    blocks_before = Image.core.get_stats()["new_count"]
    with pytest.raises(ImageError) as caught:
        probe(source, Limits(max_pixels=100_000_000))
    assert caught.value.code == "too_many_pixels"
    assert Image.core.get_stats()["new_count"] == blocks_before


def test_open_source_yields_a_lazy_image(tmp_path: Path) -> None:
    """open_source opens the header only; pixels are allocated when loaded, not before."""
    source = save(pattern(300, 200), tmp_path / "a.png", "PNG")
    blocks_before = Image.core.get_stats()["new_count"]
    with open_source(source, Limits()) as (image, info):
        assert info.width == 300
        assert Image.core.get_stats()["new_count"] == blocks_before
        image.load()
        assert Image.core.get_stats()["new_count"] > blocks_before


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    """A path that does not exist fails with an ImageError, not a bare OSError."""
    with pytest.raises(ImageError):
        probe(tmp_path / "nothing-here.jpg", Limits())


def test_memory_estimate_uses_jpeg_draft_scaling(tmp_path: Path) -> None:
    """A big JPEG is estimated at its DCT-scaled size, a PNG of the same size at full size."""
    jpeg = probe(save(pattern(4000, 3000), tmp_path / "a.jpg", "JPEG"), Limits(), 400)
    png = probe(save(pattern(4000, 3000), tmp_path / "a.png", "PNG"), Limits(), 400)
    assert png.decode_bytes - jpeg.decode_bytes > 4000 * 3000 * 3  # a full decode saved


@pytest.mark.parametrize(
    ("size", "min_side", "scale"),
    [((4000, 3000), 3840, 1), ((8000, 6000), 3840, 2), ((64000, 100), 300, 8), ((10, 10), 1, 8)],
)
def test_jpeg_draft_scale_keeps_the_longer_side(
    size: tuple[int, int], min_side: int, scale: int
) -> None:
    """The DCT scale is the largest of 1, 2, 4, 8 that keeps the longer side >= min_side."""
    assert jpeg_draft_scale(*size, min_side) == scale
    assert max(size) // scale >= min_side


def test_valid_png_passes_the_crc_check(tmp_path: Path) -> None:
    """A PNG written by Pillow passes the chunk CRC check."""
    data = save(pattern(50, 40), tmp_path / "a.png", "PNG").read_bytes()
    verify_png_crcs(io.BytesIO(data))


@pytest.mark.parametrize(
    "damage", ["ihdr-crc", "idat-byte", "no-iend", "truncated-chunk", "huge-length"]
)
def test_damaged_png_fails_the_crc_check(damage: str, tmp_path: Path) -> None:
    """Each kind of chunk damage raises CorruptImage."""
    data = save(pattern(50, 40), tmp_path / "a.png", "PNG").read_bytes()
    if damage == "ihdr-crc":
        data = data[:29] + bytes([data[29] ^ 0xFF]) + data[30:]
    elif damage == "idat-byte":
        at = data.index(b"IDAT") + 8
        data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    elif damage == "no-iend":
        data = data[: data.index(b"IEND") - 4]
    elif damage == "truncated-chunk":
        data = data[: data.index(b"IDAT") + 12]
    else:
        data = data[:8] + b"\xff\xff\xff\xff" + data[12:]
    with pytest.raises(CorruptImage):
        verify_png_crcs(io.BytesIO(data))


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    """A failing writer leaves neither the target nor a temp file."""

    def failing(file: io.BufferedWriter) -> None:
        file.write(b"half a file")
        raise RuntimeError("encoder broke")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "large.jpg", failing)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_the_target(tmp_path: Path) -> None:
    """A successful write puts the whole content at the target and returns its size."""
    target = tmp_path / "sub" / "large.jpg"
    assert write_atomically(target, lambda f: f.write(b"12345")) == 5
    assert target.read_bytes() == b"12345"
    assert [p.name for p in target.parent.iterdir()] == ["large.jpg"]


def test_remove_temp_files_removes_only_temp_files(tmp_path: Path) -> None:
    """remove_temp_files deletes leftover temp files and keeps renditions."""
    (tmp_path / f"{TEMP_PREFIX}abc").write_bytes(b"x")
    (tmp_path / f"{TEMP_PREFIX}def").write_bytes(b"x")
    (tmp_path / "large.jpg").write_bytes(b"x")
    assert remove_temp_files(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["large.jpg"]
    assert remove_temp_files(tmp_path / "missing") == 0


def _gif_with_frame_extent(width: int, height: int) -> bytes:
    """A GIF whose screen is 10 x 10 but whose first frame claims ``width`` x ``height``."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


@pytest.mark.parametrize("side", [12_000, 30_000])
def test_gif_frame_larger_than_its_screen_is_refused(side: int, tmp_path: Path) -> None:
    """A GIF frame that grows the image past the pixel limit fails before any allocation."""
    source = tmp_path / "frame.gif"
    source.write_bytes(_gif_with_frame_extent(side, side))
    blocks_before = Image.core.get_stats()["new_count"]
    with pytest.raises(ImageError) as caught:
        probe(source, Limits(max_pixels=100_000_000))
    assert caught.value.code == "too_many_pixels"
    assert Image.core.get_stats()["new_count"] == blocks_before
