"""Rules every rendition follows: file modes, the resize cascade, displayed size, greyscale."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from images import mean_abs_diff, pattern, save
from pixelmill.core import (
    OutputFormat,
    Preset,
    RenderSpec,
    manifest_dict,
    render_renditions,
    write_manifest,
)
from pixelmill.core.manifest import read_manifest_file, render_result_from_manifest
from pixelmill.storage import LocalStorage

SHA = "cd" * 32
ALL_FORMATS = (OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.PNG)

_RENDER_UNDER_UMASK = """
import os, sys
os.umask(int(sys.argv[1], 8))
from pixelmill.core import RenderSpec, manifest_dict, render_renditions, write_manifest
from pixelmill.storage import LocalStorage
folder = LocalStorage(sys.argv[3]).image_dir(sys.argv[4])
result = render_renditions(sys.argv[2], folder, RenderSpec(), sys.argv[4])
write_manifest(folder, manifest_dict(result))
"""


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_files_and_folders_follow_the_umask(umask: int, tmp_path: Path) -> None:
    """Renditions and manifests are 0644 under umask 022 (0640 under 027), folders 0755."""
    source = save(pattern(400, 300), tmp_path / "src.png", "PNG")
    root = tmp_path / "data"
    root.mkdir()
    subprocess.run(
        [sys.executable, "-c", _RENDER_UNDER_UMASK, oct(umask), str(source), str(root), SHA],
        check=True,
        timeout=120,
    )
    made = list((root / "renditions").rglob("*"))
    files = [p for p in made if p.is_file()]
    folders = [p for p in made if p.is_dir()]
    assert len(files) == 7 and len(folders) == 2  # 3 sizes x 2 formats + manifest; shard, image
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    for path in [root / "renditions", *folders]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path


def _detailed(width: int, height: int) -> Image.Image:
    """Fine stripes of changing width: any upscaling on the way blurs them visibly."""
    image = pattern(width, height)
    draw = ImageDraw.Draw(image)
    x, step = 0, 2
    while x < width:
        draw.rectangle((x, 0, x + step // 2, height - 1), fill=(255, 255, 255))
        x += step
        step = 2 + (x // 40) % 9
    return image


def test_cascade_orders_by_output_size_not_box_area(tmp_path: Path) -> None:
    """square [300,300] and banner [1000,50] on 2000x200: the banner (500x50) is not
    resized up from the square's 300x30 but made from the source."""
    original = _detailed(2000, 200)
    source = save(original, tmp_path / "wide.png", "PNG")
    spec = RenderSpec(
        presets=(Preset("square", 300, 300), Preset("banner", 1000, 50)),
        formats=(OutputFormat.PNG,),
    )
    result = render_renditions(source, tmp_path / "out", spec, SHA)
    sizes = {r.name: (r.width, r.height) for r in result.renditions}
    assert sizes == {"square": (300, 30), "banner": (500, 50)}
    for name, size in sizes.items():
        direct = original.resize(size, Image.Resampling.LANCZOS)
        with Image.open(tmp_path / "out" / f"{name}.png") as made:
            # Upscaling the banner from 300x30 differs by about 40 here; a direct resize by ~3.
            assert mean_abs_diff(made.convert("RGB"), direct) < 8, name


def test_cascade_never_resizes_from_less_than_twice_the_target(tmp_path: Path) -> None:
    """Boxes close in size: each is resized from the source, not from its near neighbour."""
    original = _detailed(1600, 1200)
    source = save(original, tmp_path / "big.png", "PNG")
    spec = RenderSpec(
        presets=(Preset("a", 800, 800), Preset("b", 700, 700), Preset("c", 300, 300)),
        formats=(OutputFormat.PNG,),
    )
    result = render_renditions(source, tmp_path / "out", spec, SHA)
    for r in result.renditions:
        direct = original.resize((r.width, r.height), Image.Resampling.LANCZOS)
        with Image.open(tmp_path / "out" / r.filename) as made:
            assert mean_abs_diff(made.convert("RGB"), direct) < 8, r.filename


def _sideways_jpeg(path: Path, stored: tuple[int, int], orientation: int = 6) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    pattern(*stored).save(path, "JPEG", exif=exif.tobytes(), quality=90)
    return path


def test_manifest_source_size_is_as_displayed(tmp_path: Path) -> None:
    """A 640x480 JPEG with orientation 6 is displayed 480x640: the manifest says so."""
    source = _sideways_jpeg(tmp_path / "side.jpg", (640, 480))
    storage = LocalStorage(tmp_path / "data")
    folder = storage.image_dir(SHA)
    result = render_renditions(source, folder, RenderSpec(), SHA)
    write_manifest(folder, manifest_dict(result))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["orientation"] == 6
    assert (manifest["source"]["width"], manifest["source"]["height"]) == (480, 640)
    large = next(r for r in manifest["renditions"] if r["name"] == "large")
    assert (large["width"], large["height"]) == (480, 640)
    # Every reader of the manifest agrees: nothing is missing, nothing is re-rendered.
    assert storage.missing_renditions(SHA, RenderSpec()) == frozenset()
    previous = render_result_from_manifest(manifest)
    assert previous is not None and (previous.source.width, previous.source.height) == (480, 640)


def test_manifest_of_the_old_code_is_read_with_the_displayed_size(tmp_path: Path) -> None:
    """A manifest written before the fix (stored size, no version) reads as displayed, and
    its upright renditions still count, so a duplicate is never served a wrong size."""
    source = _sideways_jpeg(tmp_path / "side.jpg", (640, 480))
    storage = LocalStorage(tmp_path / "data")
    folder = storage.image_dir(SHA)
    result = render_renditions(source, folder, RenderSpec(), SHA)
    old = manifest_dict(result)
    del old["manifest_version"]
    old["source"] = dict(old["source"], width=640, height=480)  # type: ignore[call-overload]
    (folder / "manifest.json").write_text(json.dumps(old))

    read = read_manifest_file(folder)
    assert read is not None
    assert (read["source"]["width"], read["source"]["height"]) == (480, 640)
    assert read["source"]["orientation"] == 6
    assert storage.read_manifest(SHA) == read
    upgraded = render_result_from_manifest(old)
    assert upgraded is not None and (upgraded.source.width, upgraded.source.height) == (480, 640)
    assert storage.missing_renditions(SHA, RenderSpec()) == frozenset()
    # Upright sources were right before too: their manifests read unchanged.
    plain = dict(old, source=dict(old["source"], orientation=1))  # type: ignore[call-overload]
    again = render_result_from_manifest(plain)
    assert again is not None and (again.source.width, again.source.height) == (640, 480)


def _grey_sources(folder: Path) -> dict[str, tuple[Path, bool]]:
    """name -> (file, has alpha) for every kind of greyscale source."""
    grey = pattern(240, 160).convert("L")
    alpha = Image.new("L", grey.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, 60, 159), fill=0)
    palette = grey.quantize(16)
    palette.putpalette([v for i in range(256) for v in (i, i, i)])  # a grey palette
    with_transparency = palette.copy()
    with_transparency.info["transparency"] = 0
    sixteen = grey.convert("I").point(lambda v: v * 257).convert("I;16")
    return {
        "jpeg-L": (save(grey, folder / "l.jpg", "JPEG"), False),
        "png-L": (save(grey, folder / "l.png", "PNG"), False),
        "png-LA": (save(Image.merge("LA", (grey, alpha)), folder / "la.png", "PNG"), True),
        "png-I16": (save(sixteen, folder / "i16.png", "PNG"), False),
        "png-1": (save(grey.convert("1"), folder / "one.png", "PNG"), False),
        "png-grey-P": (save(palette, folder / "p.png", "PNG"), False),
        "png-grey-P-tRNS": (save(with_transparency, folder / "pt.png", "PNG"), True),
        "gif-grey": (save(palette, folder / "p.gif", "GIF"), False),
    }


@pytest.mark.parametrize(
    "name",
    ["jpeg-L", "png-L", "png-LA", "png-I16", "png-1", "png-grey-P", "png-grey-P-tRNS", "gif-grey"],
)
def test_greyscale_stays_one_channel(name: str, tmp_path: Path) -> None:
    """Grey sources give L (or LA) JPEG, PNG and AVIF; WebP, which has no grey mode, gives
    RGB(A) with three equal channels (so does AVIF with alpha: Pillow writes no grey+alpha)."""
    source, has_alpha = _grey_sources(tmp_path)[name]
    spec = RenderSpec(presets=(Preset("small", 120, 120),), formats=ALL_FORMATS)
    result = render_renditions(source, tmp_path / "out", spec, SHA)
    for r in result.renditions:
        with Image.open(tmp_path / "out" / r.filename) as image:
            image.load()
            keeps_alpha = has_alpha and r.format is not OutputFormat.JPEG
            if r.format is OutputFormat.WEBP or (keeps_alpha and r.format is OutputFormat.AVIF):
                assert image.mode == ("RGBA" if keeps_alpha else "RGB"), r.filename
                red, green, blue = image.split()[:3]
                # Lossy YUV -> RGB rounding: neutral, within a level or two.
                for other in (green, blue):
                    assert ImageChops.difference(red, other).getextrema()[1] <= 3, r.filename
            else:
                assert image.mode == ("LA" if keeps_alpha else "L"), r.filename


def test_colour_palette_stays_colour(tmp_path: Path) -> None:
    """A palette with colours is not mistaken for grey."""
    source = save(pattern(240, 160).quantize(16), tmp_path / "p.png", "PNG")
    spec = RenderSpec(presets=(Preset("small", 120, 120),), formats=(OutputFormat.PNG,))
    render_renditions(source, tmp_path / "out", spec, SHA)
    with Image.open(tmp_path / "out" / "small.png") as image:
        assert image.mode == "RGB"


def test_grey_with_a_coloured_jpeg_background_becomes_colour(tmp_path: Path) -> None:
    """Transparent grey on a coloured JPEG background is composited in colour."""
    source, _ = _grey_sources(tmp_path)["png-LA"]
    spec = RenderSpec(
        presets=(Preset("small", 120, 120),),
        formats=(OutputFormat.JPEG,),
        background=(255, 0, 0),
    )
    render_renditions(source, tmp_path / "out", spec, SHA)
    with Image.open(tmp_path / "out" / "small.jpg") as image:
        assert image.mode == "RGB"
        red, green, _ = image.getpixel((2, 60))  # type: ignore[misc]
        assert red > 200 and green < 60


def test_a_manifest_written_in_this_process_gets_the_umask_mode(tmp_path: Path) -> None:
    """In this process too (whatever its umask), a manifest gets 0666 & ~umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    path = write_manifest(tmp_path, {"sha256": SHA})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
