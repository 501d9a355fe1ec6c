"""render_renditions on images built in code: modes, formats, metadata, limits, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from images import (
    ALL_MODES,
    animated_gif,
    colour_distance,
    format_by_magic,
    in_mode,
    jpeg_with_gps,
    mean_colour,
    pattern,
    save,
    source_file,
    truncated_jpeg,
)
from pixelmill.core import (
    Limits,
    OutputFormat,
    Preset,
    RenderSpec,
    manifest_dict,
    render_renditions,
    write_manifest,
)
from pixelmill.core.encode import TEMP_PREFIX, save_rendition
from pixelmill.errors import Cancelled, ImageError

SHA = "ab" * 32
ALL_FORMATS = (OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.PNG)
TWO_SIZES = (Preset("thumbnail", 150, 150), Preset("medium", 300, 300))
EVERY_FORMAT = RenderSpec(presets=TWO_SIZES, formats=ALL_FORMATS)
ALPHA_MODES = {"LA", "RGBA", "P"}
GREY_MODES = {"1", "L", "LA", "I;16", "I", "F"}


def _expected_mode(source_mode: str, fmt: OutputFormat) -> str:
    """Grey stays one channel in JPEG, PNG and AVIF (AVIF has no grey + alpha in Pillow);
    WebP has no grey mode, so it is RGB(A) with equal channels."""
    alpha = source_mode in ALPHA_MODES and fmt is not OutputFormat.JPEG
    grey = source_mode in GREY_MODES and fmt is not OutputFormat.WEBP
    if grey and not (alpha and fmt is OutputFormat.AVIF):
        return "LA" if alpha else "L"
    return "RGBA" if alpha else "RGB"


def _error_code(source: Path, out: Path, spec: RenderSpec = EVERY_FORMAT) -> str:
    with pytest.raises(ImageError) as caught:
        render_renditions(source, out, spec, SHA)
    return caught.value.code.value


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(f"{TEMP_PREFIX}*")] if folder.exists() else []


def _expected_rgb(mode: str, size: tuple[int, int]) -> Image.Image:
    """What a source of ``mode`` should look like in RGB (16-bit and float as their grey)."""
    if mode in ("I;16", "I", "F"):
        return pattern(*size).convert("L").convert("RGB")
    return in_mode(mode, *size).convert("RGB")


def _opaque_region(image: Image.Image) -> Image.Image:
    """The part of a generated image that is opaque in every mode (away from the alpha bands)."""
    width, height = image.size
    return image.crop((int(width * 0.3), int(height * 0.3), width, height))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_renders_every_format(mode: str, tmp_path: Path) -> None:
    """Each mode renders to JPEG/WebP/AVIF/PNG: right format, size, alpha and colours."""
    source = source_file(tmp_path, mode, 400, 300)
    result = render_renditions(source, tmp_path / "out", EVERY_FORMAT, SHA)
    assert [r.filename for r in result.renditions] == EVERY_FORMAT.rendition_names()
    assert result.source.mode == Image.open(source).mode
    for r in result.renditions:
        data = (tmp_path / "out" / r.filename).read_bytes()
        assert format_by_magic(data) == r.format.value, r.filename
        with Image.open(tmp_path / "out" / r.filename) as image:
            image.load()
            assert image.size == (r.width, r.height)
            exact = (150, 112.5) if r.name == "thumbnail" else (300, 225)
            assert r.width == exact[0] and abs(r.height - exact[1]) < 1, r.filename
            assert image.mode == _expected_mode(mode, r.format), r.filename
            expected = _expected_rgb(mode, image.size)
            got = mean_colour(_opaque_region(image))
            want = mean_colour(_opaque_region(expected))
            assert colour_distance(got, want) <= 8, (r.filename, got, want)


@pytest.mark.parametrize(("value", "grey"), [(32768, 128), (65535, 255), (1028, 4), (0, 0)])
def test_16_bit_grey_is_scaled_not_clipped(value: int, grey: int, tmp_path: Path) -> None:
    """A 16-bit grey PNG of value v renders as about v/257 (not clipped to 255)."""
    source = save(Image.new("I;16", (64, 48), value), tmp_path / "grey16.png", "PNG")
    assert Image.open(source).mode == "I;16"
    spec = RenderSpec(presets=TWO_SIZES, formats=(OutputFormat.PNG,))
    render_renditions(source, tmp_path / "out", spec, SHA)
    with Image.open(tmp_path / "out" / "thumbnail.png") as image:
        assert abs(image.convert("L").getpixel((10, 10)) - grey) <= 1


def test_metadata_is_stripped(tmp_path: Path) -> None:
    """EXIF (with GPS), XMP and comments of the source reach no rendition."""
    source = jpeg_with_gps(tmp_path / "gps.jpg")
    raw = source.read_bytes()
    markers = (b"PixelmillCam", b"secret-xmp", b"secret-comment")
    assert all(marker in raw for marker in markers)
    with Image.open(source) as original:
        assert original.getexif().get_ifd(0x8825)  # the source really carries GPS
    result = render_renditions(source, tmp_path / "out", EVERY_FORMAT, SHA)
    for r in result.renditions:
        data = (tmp_path / "out" / r.filename).read_bytes()
        assert not [m for m in markers if m in data], r.filename
        with Image.open(tmp_path / "out" / r.filename) as image:
            assert not image.getexif(), r.filename
            assert not {"exif", "xmp", "comment", "icc_profile"} & image.info.keys(), r.filename


@pytest.mark.parametrize(("fmt", "frames"), [("GIF", None), ("WEBP", 3)])
def test_animated_source_renders_its_first_frame(
    fmt: str, frames: int | None, tmp_path: Path
) -> None:
    """An animated GIF/WebP renders frame one; GIF frames are not counted (frames None)."""
    colours = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]
    if fmt == "GIF":
        source = animated_gif(tmp_path / "anim.gif", colours)
    else:
        images = [Image.new("RGB", (64, 64), c) for c in colours]
        source = tmp_path / "anim.webp"
        images[0].save(source, "WEBP", save_all=True, append_images=images[1:], lossless=True)
    result = render_renditions(source, tmp_path / "out", EVERY_FORMAT, SHA)
    assert result.source.frames == frames
    for r in result.renditions:
        with Image.open(tmp_path / "out" / r.filename) as image:
            assert getattr(image, "n_frames", 1) == 1, r.filename
            assert colour_distance(mean_colour(image), colours[0]) <= 10, r.filename


def test_file_size_limit_is_inclusive(tmp_path: Path) -> None:
    """A file of exactly max_bytes renders; one byte over fails file_too_large."""
    source = save(pattern(60, 40), tmp_path / "small.png", "PNG")
    size = source.stat().st_size
    exact = RenderSpec(presets=TWO_SIZES, limits=Limits(max_bytes=size))
    assert render_renditions(source, tmp_path / "ok", exact, SHA).source.bytes == size
    over = RenderSpec(presets=TWO_SIZES, limits=Limits(max_bytes=size - 1))
    assert _error_code(source, tmp_path / "over", over) == "file_too_large"
    assert not (tmp_path / "over").exists()


def test_pixel_limit_is_inclusive(tmp_path: Path) -> None:
    """width x height equal to max_pixels renders; one pixel fewer allowed fails."""
    source = save(pattern(100, 50), tmp_path / "px.png", "PNG")
    exact = RenderSpec(presets=TWO_SIZES, limits=Limits(max_pixels=5000))
    assert render_renditions(source, tmp_path / "ok", exact, SHA).source.width == 100
    under = RenderSpec(presets=TWO_SIZES, limits=Limits(max_pixels=4999))
    assert _error_code(source, tmp_path / "under", under) == "too_many_pixels"


@pytest.mark.parametrize(
    "content",
    [
        b"just some text, not an image\n",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog>>endobj\n",
        b"",
    ],
    ids=["text", "svg", "pdf", "empty"],
)
def test_non_image_is_unsupported_format(content: bytes, tmp_path: Path) -> None:
    """Text, SVG, PDF and empty files fail unsupported_format, whatever their name."""
    source = tmp_path / "photo.jpg"
    source.write_bytes(content)
    assert _error_code(source, tmp_path / "out") == "unsupported_format"


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.95])
def test_truncated_jpeg_is_corrupt(keep: float, tmp_path: Path) -> None:
    """A JPEG cut short fails corrupt_image and leaves no file behind."""
    source = truncated_jpeg(tmp_path / "cut.jpg", keep)
    assert _error_code(source, tmp_path / "out") == "corrupt_image"
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_png_with_a_bad_crc_is_corrupt(tmp_path: Path) -> None:
    """A PNG with one flipped byte in its image data fails corrupt_image (CRC check)."""
    good = save(pattern(60, 40), tmp_path / "good.png", "PNG").read_bytes()
    idat = good.index(b"IDAT") + 4 + 10
    damaged = good[:idat] + bytes([good[idat] ^ 0x01]) + good[idat + 1 :]
    source = tmp_path / "bad.png"
    source.write_bytes(damaged)
    assert _error_code(source, tmp_path / "out") == "corrupt_image"


def test_only_renders_the_named_files(tmp_path: Path) -> None:
    """``only`` writes and reports just the asked renditions."""
    source = save(pattern(400, 300), tmp_path / "src.png", "PNG")
    wanted = frozenset({"thumbnail.webp", "medium.png"})
    result = render_renditions(source, tmp_path / "out", EVERY_FORMAT, SHA, only=wanted)
    assert {r.filename for r in result.renditions} == wanted
    assert {p.name for p in (tmp_path / "out").iterdir()} == wanted


def test_cancel_between_renditions(tmp_path: Path) -> None:
    """should_cancel turning true raises Cancelled; finished files stay whole, no temp files."""
    source = save(pattern(400, 300), tmp_path / "src.png", "PNG")
    answers = iter([False, True])
    with pytest.raises(Cancelled) as caught:
        render_renditions(
            source, tmp_path / "out", EVERY_FORMAT, SHA, should_cancel=lambda: next(answers)
        )
    assert caught.value.code == "cancelled"
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(f"medium.{f.extension}" for f in ALL_FORMATS)
    for name in written:
        Image.open(tmp_path / "out" / name).load()
    assert _temp_files(tmp_path) == []


def test_cancel_before_any_rendition(tmp_path: Path) -> None:
    """A cancel requested at once writes nothing."""
    source = save(pattern(400, 300), tmp_path / "src.png", "PNG")
    with pytest.raises(Cancelled):
        render_renditions(source, tmp_path / "out", EVERY_FORMAT, SHA, should_cancel=lambda: True)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_unwritable_output_raises_oserror_not_image_error(tmp_path: Path) -> None:
    """An output path that cannot be written is an OSError (not the image's fault)."""
    source = save(pattern(400, 300), tmp_path / "src.png", "PNG")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(OSError) as caught:
        render_renditions(source, blocker / "out", EVERY_FORMAT, SHA)
    assert not isinstance(caught.value, ImageError)
    assert _temp_files(tmp_path) == []


def test_manifest_has_the_shape_of_the_design(tmp_path: Path) -> None:
    """manifest.json holds exactly the fields and types DESIGN.md lists."""
    source = jpeg_with_gps(tmp_path / "src.jpg", (640, 480))
    out = tmp_path / "out"
    result = render_renditions(source, out, RenderSpec(), SHA)
    path = write_manifest(out, manifest_dict(result))
    assert path == out / "manifest.json"
    manifest = json.loads(path.read_text())
    assert list(manifest) == [
        "sha256",
        "source",
        "placeholder",
        "renditions",
        "timings_ms",
        "manifest_version",
    ]
    assert manifest["manifest_version"] == 2
    assert isinstance(manifest["placeholder"], str) and manifest["placeholder"]
    assert manifest["sha256"] == SHA
    assert manifest["source"] == {
        "format": "jpeg",
        "width": 640,
        "height": 480,
        "bytes": source.stat().st_size,
        "orientation": 1,
        "mode": "RGB",
        "icc": False,
        "frames": 1,
    }
    assert [(r["name"], r["format"]) for r in manifest["renditions"]] == [
        (p, f) for p in ("thumbnail", "medium", "large") for f in ("jpeg", "webp")
    ]
    for r in manifest["renditions"]:
        assert set(r) == {"name", "format", "width", "height", "bytes", "path"}
        rendition = out / r["path"]
        assert rendition.stat().st_size == r["bytes"]
        assert Image.open(rendition).size == (r["width"], r["height"])
    assert list(manifest["timings_ms"]) == ["read", "decode", "resize", "encode", "total"]
    assert all(isinstance(v, float) and v >= 0 for v in manifest["timings_ms"].values())
    assert manifest["timings_ms"]["total"] >= manifest["timings_ms"]["encode"]


def test_exif_too_long_for_a_jpeg_is_left_out_of_jpegs_only(tmp_path: Path) -> None:
    """EXIF over 64 KB (a PNG may carry it) used to fail the image `internal` when kept:
    Pillow refuses it in a JPEG. JPEGs now go without it; WebP keeps it."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription
    source = tmp_path / "long-exif.png"
    pattern(400, 300).save(source, "PNG", exif=exif.tobytes())
    spec = RenderSpec(
        presets=(Preset("small", 200, 200),),
        formats=(OutputFormat.JPEG, OutputFormat.WEBP),
        keep_metadata=True,
    )
    render_renditions(source, tmp_path / "out", spec, SHA)
    with Image.open(tmp_path / "out" / "small.jpg") as jpeg:
        assert not jpeg.getexif()
    with Image.open(tmp_path / "out" / "small.webp") as webp:
        assert webp.getexif()[0x010E] == "x" * 70_000


def test_a_tiffs_own_layout_and_payloads_are_not_kept_as_exif(tmp_path: Path) -> None:
    """Pillow reads a TIFF's first tag directory as its EXIF: its layout (size, strips)
    and its XMP payload described the source file, not a rendition, and a big XMP left
    JPEGs without any EXIF. The camera's tags stay."""
    source = tmp_path / "scan.tif"
    xmp = b"<x:xmpmeta>" + b"x" * 80_000 + b"</x:xmpmeta>"
    pattern(400, 300).save(source, "TIFF", tiffinfo={0x010F: "Camera maker", 0x02BC: xmp})
    spec = RenderSpec(
        presets=(Preset("small", 200, 200),), formats=(OutputFormat.JPEG,), keep_metadata=True
    )
    render_renditions(source, tmp_path / "out", spec, SHA)
    with Image.open(tmp_path / "out" / "small.jpg") as jpeg:
        kept = jpeg.getexif()
    assert kept[0x010F] == "Camera maker"
    assert not {0x02BC, 0x0100, 0x0101, 0x0103, 0x0111} & set(kept)


@pytest.mark.parametrize(("size", "kept"), [(65533, True), (65534, False)])
def test_exif_is_kept_in_a_jpeg_up_to_one_segment(tmp_path: Path, size: int, kept: bool) -> None:
    exif = b"Exif\x00\x00" + b"\x00" * (size - 6)
    save_rendition(pattern(64, 48), tmp_path / "r.jpg", OutputFormat.JPEG, 85, exif)
    with Image.open(tmp_path / "r.jpg") as jpeg:
        assert (jpeg.info.get("exif") == exif) is kept
