"""Colour and alpha: embedded profiles and CMYK come out sRGB; transparency per format."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from images import colour_distance, mean_colour, save, transparent_square
from pixelmill.core import OutputFormat, Preset, RenderSpec, render_renditions

ALL_FORMATS = (OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.PNG)
SMALL = RenderSpec(presets=(Preset("medium", 800, 800),), formats=ALL_FORMATS)
# Allowed distance (levels, per channel) of a rendition's mean colour from the reference.
TOLERANCE = {OutputFormat.PNG: 2.0, OutputFormat.JPEG: 3.0, OutputFormat.WEBP: 3.0}


def _reference_srgb(source: Path) -> Image.Image:
    """The source converted to sRGB through its embedded profile, independently of pixelmill."""
    with Image.open(source) as image:
        image.load()
        icc = image.info["icc_profile"]
        pixels = image.convert("RGB") if image.mode == "RGBA" else image
        converted = ImageCms.profileToProfile(
            pixels,
            ImageCms.ImageCmsProfile(io.BytesIO(icc)),
            ImageCms.createProfile("sRGB"),
            outputMode="RGB",
        )
        assert converted is not None
        return converted


def _naive_rgb(source: Path) -> Image.Image:
    with Image.open(source) as image:
        return image.convert("RGB")


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["photos/p3.png", "photos/Channel_digital_image_CMYK_color.jpg"])
def test_profiled_source_comes_out_srgb(name: str, corpus: Path, tmp_path: Path) -> None:
    """Mean colour matches an ImageCms sRGB conversion; a naive convert("RGB") would not."""
    source = corpus / name
    spec = RenderSpec(
        presets=(Preset("medium", 800, 800),),
        formats=(OutputFormat.PNG, OutputFormat.JPEG, OutputFormat.WEBP),
    )
    result = render_renditions(source, tmp_path, spec, "0" * 64)
    reference = mean_colour(_reference_srgb(source))
    naive = mean_colour(_naive_rgb(source))
    for r in result.renditions:
        with Image.open(tmp_path / r.filename) as rendition:
            assert rendition.mode in ("RGB", "RGBA"), r.filename
            assert not rendition.info.get("icc_profile"), r.filename
            got = mean_colour(rendition)
        tolerance = TOLERANCE[r.format]
        assert colour_distance(got, reference) <= tolerance, (r.filename, got, reference)
        assert colour_distance(naive, reference) > tolerance + 2, "naive would pass too"


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_without_profile_comes_out_rgb(fmt: str, tmp_path: Path) -> None:
    """A CMYK source without a profile renders in RGB with its colours (red stays red)."""
    source = save(Image.new("CMYK", (120, 80), (0, 255, 255, 0)), tmp_path / "cmyk", fmt)
    result = render_renditions(source, tmp_path / "out", SMALL, "0" * 64)
    for r in result.renditions:
        with Image.open(tmp_path / "out" / r.filename) as image:
            assert image.mode in ("RGB", "RGBA"), r.filename
            assert colour_distance(mean_colour(image), (255, 0, 0)) <= 8, r.filename


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_transparency_per_format(fmt: OutputFormat, tmp_path: Path) -> None:
    """Transparent corners are white in JPEG and stay fully transparent in WebP/AVIF/PNG."""
    source = save(transparent_square(200), tmp_path / "alpha.png", "PNG")
    spec = RenderSpec(presets=(Preset("medium", 800, 800),), formats=(fmt,))
    result = render_renditions(source, tmp_path / "out", spec, "0" * 64)
    (rendition,) = result.renditions
    with Image.open(tmp_path / "out" / rendition.filename) as image:
        image.load()
        centre = image.convert("RGB").getpixel((100, 100))
        assert colour_distance(centre, (220, 20, 20)) <= 12
        if fmt is OutputFormat.JPEG:
            assert image.mode == "RGB"
            assert min(image.getpixel((2, 2))) >= 250  # white, not the black underneath
        else:
            assert image.mode == "RGBA"
            assert image.getpixel((2, 2))[3] == 0


def test_jpeg_background_is_configurable(tmp_path: Path) -> None:
    """A configured background colour replaces white under transparent pixels in JPEG."""
    source = save(transparent_square(200), tmp_path / "alpha.png", "PNG")
    spec = RenderSpec(
        presets=(Preset("medium", 800, 800),),
        formats=(OutputFormat.JPEG,),
        background=(0, 90, 255),
    )
    render_renditions(source, tmp_path / "out", spec, "0" * 64)
    with Image.open(tmp_path / "out" / "medium.jpg") as image:
        assert colour_distance(image.getpixel((2, 2)), (0, 90, 255)) <= 6
