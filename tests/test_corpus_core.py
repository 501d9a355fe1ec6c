"""Every corpus file through ``render_renditions``: outcomes, renditions, bombs, payloads."""

from __future__ import annotations

import csv
import tracemalloc
import warnings
from pathlib import Path

import pytest
from PIL import Image

from corpus_expectations import check_outcome
from images import format_by_magic
from pixelmill.core import RenderResult, RenderSpec, render_renditions
from pixelmill.core.encode import TEMP_PREFIX
from pixelmill.errors import ImageError

pytestmark = pytest.mark.corpus

_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "manifest.csv"
_MISSING = {"path": "corpus-missing", "expected": "decode"}


def _rows() -> list[dict[str, str]]:
    """Manifest rows at collection time; one placeholder (which skips) without the corpus."""
    if not _MANIFEST.is_file():
        return [_MISSING]
    with open(_MANIFEST, newline="") as f:
        return list(csv.DictReader(f))


ROWS = _rows()
SPEC = RenderSpec()


def _render(source: Path, out: Path, spec: RenderSpec = SPEC) -> tuple[RenderResult | None, str]:
    """Render and return (result, "") or (None, error code); a non-ImageError propagates."""
    try:
        return render_renditions(source, out, spec, "0" * 64), ""
    except ImageError as exc:
        return None, exc.code.value


def _orientation_from_row(row: dict[str, str]) -> int:
    value = row.get("exif_orientation", "")
    return int(value) if value.isdigit() and 1 <= int(value) <= 8 else 1


def _check_renditions(row: dict[str, str], result: RenderResult, out: Path) -> None:
    """Each rendition is a real file of its format, fits its box, keeps aspect, never grows."""
    assert result.source.orientation == _orientation_from_row(row)
    src_w, src_h = int(row["width"]), int(row["height"])
    if result.source.orientation in (5, 6, 7, 8):
        src_w, src_h = src_h, src_w
    boxes = {p.name: (p.width, p.height) for p in SPEC.presets}
    assert sorted(r.filename for r in result.renditions) == sorted(SPEC.rendition_names())
    for r in result.renditions:
        data = (out / r.filename).read_bytes()
        assert len(data) == r.bytes
        assert format_by_magic(data) == r.format.value, r.filename
        with Image.open(out / r.filename) as decoded:
            assert decoded.size == (r.width, r.height), r.filename
            assert "exif" not in decoded.info and "xmp" not in decoded.info, r.filename
        box_w, box_h = boxes[r.name]
        assert r.width <= min(box_w, src_w) and r.height <= min(box_h, src_h), r.filename
        scale = min(box_w / src_w, box_h / src_h, 1.0)
        assert abs(r.width - src_w * scale) <= 1 and abs(r.height - src_h * scale) <= 1
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("row", ROWS, ids=[r["path"] for r in ROWS])
def test_corpus_file_meets_its_expectation(
    row: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    """The file renders or fails as its row expects; a non-ImageError is a bug."""
    result, code = _render(corpus / row["path"], tmp_path)
    problem = check_outcome(row, result is not None, code or None)
    assert problem is None, problem
    if result is not None:
        _check_renditions(row, result, tmp_path)


BOMBS = [r for r in ROWS if r["expected"] == "reject_by_pixel_limit"]


@pytest.mark.parametrize("row", BOMBS, ids=[r["path"] for r in BOMBS])
def test_bomb_is_refused_without_allocating(
    row: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    """A decompression bomb fails too_many_pixels with no pixel buffer and < 4 MB allocated."""
    blocks_before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    try:
        result, code = _render(corpus / row["path"], tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result, code) == (None, "too_many_pixels")
    assert Image.core.get_stats()["new_count"] == blocks_before
    assert peak < 4 * 1024 * 1024


def test_allocation_probe_sees_a_decode(corpus: Path, tmp_path: Path) -> None:
    """Control for the bomb test: an image let through does allocate pixel buffers."""
    blocks_before = Image.core.get_stats()["new_count"]
    result, code = _render(corpus / "photos/flowers.jpeg", tmp_path)
    assert code == "" and result is not None
    assert Image.core.get_stats()["new_count"] > blocks_before


@pytest.mark.parametrize(
    "name", ["corrupt/pillow/hopper_bad_exif.jpg", "corrupt/pillow/crash-2020-10-test.tif"]
)
def test_damaged_file_raises_no_python_warning(name: str, corpus: Path, tmp_path: Path) -> None:
    """Decoder warnings about damaged tags or EXIF never reach the console."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _render(corpus / name, tmp_path)
    assert [str(w.message) for w in caught] == []


PNGSUITE_CORRUPT = [r for r in ROWS if r["path"].startswith("pngsuite/x")]


def test_every_corrupt_pngsuite_file_is_listed(corpus: Path) -> None:
    """The fourteen x* PngSuite files are in the manifest, all expected to be rejected."""
    assert len(PNGSUITE_CORRUPT) == 14
    assert {r["expected"] for r in PNGSUITE_CORRUPT} == {"reject"}


def test_png_with_bad_idat_crc_is_rejected_by_the_crc_check(corpus: Path, tmp_path: Path) -> None:
    """xcsn0g01.png, which Pillow decodes, fails corrupt_image because its IDAT CRC is wrong."""
    source = corpus / "pngsuite/xcsn0g01.png"
    with Image.open(source) as lenient:
        lenient.load()  # Pillow alone accepts it: the rejection must come from pixelmill
    with pytest.raises(ImageError) as caught:
        render_renditions(source, tmp_path, SPEC, "0" * 64)
    assert caught.value.code == "corrupt_image"
    assert "CRC" in caught.value.message


@pytest.mark.parametrize(
    "name", ["corrupt/fuzzdb/POC_phpinfo-metadata.jpg", "corrupt/fuzzdb/POC_phpinfo-metadata.gif"]
)
def test_script_in_metadata_never_reaches_a_rendition(
    name: str, corpus: Path, tmp_path: Path
) -> None:
    """An image carrying PHP in its metadata renders, and no rendition contains the PHP."""
    assert b"phpinfo" in (corpus / name).read_bytes()
    result = render_renditions(corpus / name, tmp_path, SPEC, "0" * 64)
    assert len(result.renditions) == len(SPEC.rendition_names())
    for r in result.renditions:
        data = (tmp_path / r.filename).read_bytes()
        assert b"<?php" not in data and b"phpinfo" not in data, r.filename


def test_frame_flood_renders_only_its_first_frame(corpus: Path, tmp_path: Path) -> None:
    """uber.gif (about 40,000 frames) renders its 1x1 first frame without counting frames."""
    result = render_renditions(corpus / "bombs/uber.gif", tmp_path, SPEC, "0" * 64)
    assert (result.source.width, result.source.height) == (1, 1)
    assert result.source.frames in (None, 1)
    assert result.timings.total < 2000
