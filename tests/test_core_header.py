"""The header probe parses in Python only (no libheif/libavif/libwebp in the service), gives
the decoders' size, and ends hostile ISOBMFF quickly as a clean error."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from images import pattern
from pixelmill.core import Limits, probe
from pixelmill.core.source import open_source
from pixelmill.errors import ImageError

# Native decoders the service process must never load to read a header.
NATIVE_DECODERS = (
    "pillow_heif",
    "_pillow_heif",
    "PIL._avif",
    "PIL.AvifImagePlugin",
    "PIL._webp",
    "PIL.WebPImagePlugin",
)

_PROBE_IN_A_FRESH_PROCESS = """
import json, sys
sys.modules["pillow_heif"] = None  # importing it now raises ImportError
import pixelmill.engine.local  # the dispatcher's module, with everything it imports
from pixelmill.core import Limits, probe
sizes = {}
for path in sys.argv[2:]:
    found = probe(path, Limits())
    sizes[path] = [found.width, found.height, found.mode]
loaded = [name for name in json.loads(sys.argv[1]) if sys.modules.get(name) is not None]
print(json.dumps({"sizes": sizes, "loaded": loaded}))
"""


def _generated(folder: Path) -> list[Path]:
    """HEIF and AVIF files with alpha, grey and a rotation (irot) stored by the encoder."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    made = []
    for fmt in ("HEIF", "AVIF", "WEBP"):
        for mode, orientation in (("RGB", 1), ("RGBA", 6), ("L", 8), ("RGB", 5)):
            exif = Image.Exif()
            exif[0x0112] = orientation
            path = folder / f"{mode}-{orientation}.{fmt.lower()}"
            pattern(96, 40).convert(mode).save(path, fmt, exif=exif.tobytes())
            made.append(path)
    return made


def _decoded(path: Path) -> list[object]:
    """Size and mode after a full decode, as the worker's render sees them."""
    with open_source(path, Limits()) as (image, _):
        image.load()
        return [image.width, image.height, image.mode]


def test_probe_loads_no_native_decoder_and_matches_the_decode(corpus: Path, tmp_path: Path) -> None:
    """HEIF/AVIF/WebP headers are read in Python: pillow_heif unimportable, no libavif or
    libwebp module loaded, and the size and mode equal what the full decode gives."""
    photos = corpus / "photos"
    files = sorted(
        [*photos.glob("*.heic"), *photos.glob("*.avif"), *photos.glob("*.webp")]
    ) + _generated(tmp_path)
    assert len(files) >= 15
    done = subprocess.run(
        [sys.executable, "-c", _PROBE_IN_A_FRESH_PROCESS, json.dumps(NATIVE_DECODERS)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["loaded"] == []
    for path in files:
        assert report["sizes"][str(path)] == _decoded(path), path.name


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full(kind: bytes, payload: bytes, version: int = 0) -> bytes:
    return _box(kind, bytes([version, 0, 0, 0]) + payload)


FTYP = _box(b"ftyp", b"avif" + b"\0\0\0\0" + b"mif1avif")
FTYP_HEIC = _box(b"ftyp", b"heic" + b"\0\0\0\0" + b"mif1heic")  # transforms applied


def _meta(*children: bytes) -> bytes:
    return _full(b"meta", b"".join(children))


def _ispe(width: int, height: int) -> bytes:
    return _full(b"ispe", struct.pack(">II", width, height))


def _iprp(properties: list[bytes], associations: bytes) -> bytes:
    return _box(b"iprp", _box(b"ipco", b"".join(properties)) + associations)


def _ipma(item: int, *indices: int) -> bytes:
    entry = struct.pack(">HB", item, len(indices)) + bytes(indices)
    return _full(b"ipma", struct.pack(">I", 1) + entry)


PITM = _full(b"pitm", struct.pack(">H", 1))
GOOD = FTYP + _meta(PITM, _iprp([_ispe(640, 480)], _ipma(1, 1)))
HUGE = struct.pack(">I", 0xFFFFFFF0)

HOSTILE = {
    "no meta": FTYP + _box(b"mdat", b"\0" * 32),
    "meta past the end": FTYP + HUGE + b"meta" + b"\0" * 64,
    "64-bit size past the end": FTYP + struct.pack(">I4sQ", 1, b"meta", 1 << 62),
    "box smaller than its header": FTYP + struct.pack(">I4s", 3, b"meta") + b"\0" * 16,
    "child past its parent": FTYP + _meta(HUGE + b"iprp"),
    "no primary item": FTYP + _meta(_iprp([_ispe(640, 480)], _ipma(1, 1))),
    "no size": FTYP + _meta(PITM, _iprp([], _ipma(1, 1))),
    "ispe cut short": FTYP + _meta(PITM, _iprp([_full(b"ispe", b"\0\0")], _ipma(1, 1))),
    "ipma counts more than it holds": FTYP
    + _meta(PITM, _iprp([_ispe(10, 10)], _full(b"ipma", struct.pack(">I", 10**9)))),
    "empty boxes forever": FTYP + _meta(PITM, _box(b"iprp", _box(b"free", b"") * 20_000)),
    "size zero everywhere": FTYP + _meta(PITM, struct.pack(">I4s", 0, b"iprp")),
    "clap of zero": FTYP_HEIC
    + _meta(
        PITM,
        _iprp(
            [_ispe(64, 64), _box(b"clap", struct.pack(">iIiIiIiI", 0, 0, 1, 1, 0, 1, 0, 1))],
            _ipma(1, 1, 2),
        ),
    ),
    "empty image": FTYP + _meta(PITM, _iprp([_ispe(0, 480)], _ipma(1, 1))),
    "truncated after ftyp": FTYP,
    "many top-level boxes": FTYP + _box(b"free", b"") * 5_000 + GOOD[len(FTYP) :],
}


def _item_flood(items: int) -> bytes:
    """An ipma (version 1: 32-bit item ids) listing ``items`` items with one property each."""
    entries = b"".join(struct.pack(">IBB", item, 1, 1) for item in range(2, items + 2))
    ipma = _full(b"ipma", struct.pack(">I", items) + entries, version=1)
    return FTYP + _meta(PITM, _iprp([_ispe(10, 10)], ipma))


def _reference_flood(refs: int) -> bytes:
    """An alpha item, and an iref of ``refs`` auxl references of 65535 targets each."""
    alpha = _full(b"auxC", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha\0")
    ipma = _full(b"ipma", struct.pack(">I", 2) + struct.pack(">HBBHBB", 1, 1, 1, 2, 1, 2))
    auxl = _box(b"auxl", struct.pack(">HH", 2, 65535) + b"\0\0" * 65535)
    return FTYP + _meta(PITM, _iprp([_ispe(10, 10), alpha], ipma), _full(b"iref", auxl * refs))


# Well-formed boxes, hostile counts: a 6 MB meta box of items or references.
FLOODS = {
    "a million property items": _item_flood(1_000_000),
    "auxl references": _reference_flood(45),
}
HOSTILE.update(FLOODS)


@pytest.mark.parametrize("name", sorted(FLOODS))
def test_floods_of_items_or_references_stay_small_in_memory(name: str, tmp_path: Path) -> None:
    """The probe runs in the service process: a meta box listing a million items (or
    references) is refused before it costs more memory than a few times its own size."""
    path = tmp_path / "flood.avif"
    path.write_bytes(FLOODS[name])
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as caught:
            probe(path, Limits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.code == "corrupt_image"
    assert peak < 4 * len(FLOODS[name]) + 16 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_isobmff_is_a_clean_error_at_once(name: str, tmp_path: Path) -> None:
    """Truncations, impossible sizes, loops and floods of boxes: corrupt_image in < 1 s."""
    path = tmp_path / "hostile.avif"
    path.write_bytes(HOSTILE[name])
    started = time.monotonic()
    with pytest.raises(ImageError) as caught:
        probe(path, Limits())
    assert caught.value.code in ("corrupt_image", "unsupported_format")
    assert time.monotonic() - started < 1.0


def test_a_minimal_header_reads_and_the_pixel_limit_applies(tmp_path: Path) -> None:
    """The hand-built header reads as 640x480; the same with 20000x20000 is too_many_pixels
    (in the worker too, before libavif sees the bytes)."""
    path = tmp_path / "good.avif"
    path.write_bytes(GOOD)
    found = probe(path, Limits())
    assert (found.width, found.height, found.mode) == (640, 480, "RGB")
    path.write_bytes(GOOD.replace(struct.pack(">II", 640, 480), struct.pack(">II", 20_000, 20_000)))
    for check in (lambda: probe(path, Limits()), lambda: open_source(path, Limits()).__enter__()):
        with pytest.raises(ImageError) as caught:
            check()
        assert caught.value.code == "too_many_pixels"


@pytest.mark.parametrize("keep", [12, 40, 100, 300, 0.5, 0.9])
def test_truncated_heif_and_avif_from_the_corpus_are_clean_errors(
    keep: float, corpus: Path, tmp_path: Path
) -> None:
    """Any cut of a real HEIF/AVIF file: the probe answers a size or a clean error, fast."""
    for source in [*(corpus / "photos").glob("*.heic"), *(corpus / "photos").glob("*.avif")]:
        data = source.read_bytes()
        cut = data[: int(len(data) * keep) if isinstance(keep, float) else keep]
        path = tmp_path / f"cut{source.suffix}"
        path.write_bytes(cut)
        started = time.monotonic()
        try:
            probe(path, Limits())
        except ImageError as exc:
            assert exc.code in ("corrupt_image", "unsupported_format")
        assert time.monotonic() - started < 1.0


def test_webp_header_variants(tmp_path: Path) -> None:
    """Lossy, lossless and extended WebP: size and alpha from the first chunk."""
    for name, image, options in (
        ("lossy", pattern(123, 45), {}),
        ("lossless", pattern(123, 45).convert("RGBA"), {"lossless": True}),
        ("extended", pattern(123, 45).convert("RGBA"), {"quality": 50}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", **options)
        path = tmp_path / f"{name}.webp"
        path.write_bytes(buffer.getvalue())
        assert [*_probe_size(path)] == _decoded(path), name


def _probe_size(path: Path) -> tuple[int, int, str]:
    found = probe(path, Limits())
    return found.width, found.height, found.mode


def test_a_heif_cropped_small_from_a_huge_coded_image_is_over_the_pixel_limit(
    tmp_path: Path,
) -> None:
    """libheif decodes the whole coded image (ispe) before it applies the crop (clap): a
    20000x20000 image cropped to 100x100 costs 400 million pixels, so it is refused."""
    clap = _box(b"clap", struct.pack(">iIiIiIiI", 100, 1, 100, 1, 0, 1, 0, 1))
    cropped = FTYP_HEIC + _meta(PITM, _iprp([_ispe(20_000, 20_000), clap], _ipma(1, 1, 2)))
    path = tmp_path / "cropped.heic"
    path.write_bytes(cropped)
    with pytest.raises(ImageError) as caught:
        probe(path, Limits())
    assert caught.value.code == "too_many_pixels"
    # The same crop of a small coded image is fine, and reads as its cropped size.
    path.write_bytes(
        cropped.replace(struct.pack(">II", 20_000, 20_000), struct.pack(">II", 640, 480))
    )
    found = probe(path, Limits())
    assert (found.width, found.height) == (100, 100)
