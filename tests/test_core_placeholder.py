"""ThumbHash placeholders: the reference encoding, computed in the render, kept in manifests."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from images import colour_distance, in_mode, mean_colour, pattern, transparent_square
from pixelmill.cli import app
from pixelmill.core import manifest_dict, render_renditions
from pixelmill.core.manifest import render_result_from_manifest
from pixelmill.core.placeholder import (
    decode_thumbhash,
    encode_thumbhash,
    thumbhash_aspect_ratio,
)
from pixelmill.core.specs import Preset, RenderSpec

SHA = "cd" * 32
SPEC = RenderSpec(presets=(Preset("thumb", 150, 150), Preset("large", 600, 600)))

# Hashes the reference implementation (the npm package thumbhash 0.1.1, rgbaToThumbHash)
# gives for these images, base64 as btoa writes it.
REFERENCE = [
    (lambda: pattern(100, 60), "GrcFVJROQIhRunllmb9pwPjolw==", True),
    (lambda: pattern(40, 90), "GrcFUxRNYVqWv2SHacD46Jc=", True),
    (lambda: in_mode("RGBA", 100, 66), "23eBQ4gpT1FUymd5kPrUUiBkkImSSWg=", True),
    # One colour on transparency: the colour channels' varying terms are all rounding noise
    # (their scale quantises to 0), so their bytes depend on the order of summation; the
    # decoded picture does not.
    (lambda: transparent_square(64), "FYuDBQAk2Ih4h390iPiHi3+3B3iHeICMdw==", False),
]


@pytest.mark.parametrize(("build", "expected", "same_bytes"), REFERENCE)
def test_the_encoder_gives_the_reference_hash(
    build: Callable[[], Image.Image], expected: str, same_bytes: bool
) -> None:
    """Opaque and transparent, landscape and portrait: the reference's hash (byte for byte
    where the bytes carry information), decoding to the very same preview."""
    image = build().convert("RGBA")
    encoded = encode_thumbhash(image.width, image.height, image.tobytes())
    if same_bytes:
        assert base64.b64encode(encoded).decode() == expected
    ours, reference = decode_thumbhash(encoded), decode_thumbhash(base64.b64decode(expected))
    assert ours.tobytes() == reference.tobytes()


def test_the_encoder_refuses_more_than_100_pixels_a_side() -> None:
    with pytest.raises(ValueError, match="100x100"):
        encode_thumbhash(101, 10, bytes(101 * 10 * 4))


def _render(source: Path, out: Path, spec: RenderSpec = SPEC) -> tuple[str, Image.Image]:
    result = render_renditions(source, out, spec, SHA)
    assert result.placeholder is not None
    return result.placeholder, decode_thumbhash(base64.b64decode(result.placeholder))


def test_the_placeholder_decodes_to_the_pictures_colours(tmp_path: Path) -> None:
    """The decoded preview's mean colour is close to the source's; a few dozen bytes."""
    source = tmp_path / "src.png"
    pattern(640, 400).save(source)
    placeholder, preview = _render(source, tmp_path / "out")
    assert len(base64.b64decode(placeholder)) <= 30
    assert preview.width == 32 and 18 <= preview.height <= 22  # landscape, about 16:10
    assert colour_distance(mean_colour(preview), mean_colour(pattern(640, 400))) < 12
    # It can fail: a different picture's colours are far away.
    assert colour_distance(mean_colour(preview), (128, 128, 128)) > 30


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["photos/kodim03.png", "photos/flowers.jpeg"])
def test_a_corpus_photos_placeholder_has_its_mean_colour(
    corpus: Path, tmp_path: Path, name: str
) -> None:
    _, preview = _render(corpus / name, tmp_path)
    with Image.open(corpus / name) as source:
        expected = mean_colour(source)
    assert colour_distance(mean_colour(preview), expected) < 12


def test_orientation_is_applied_before_hashing(tmp_path: Path) -> None:
    """A landscape picture stored sideways (EXIF 6) is hashed upright: a portrait ratio."""
    upright = pattern(400, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = tmp_path / "sideways.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(stored, "JPEG", quality=95, exif=exif)
    plain = tmp_path / "plain.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(plain, "JPEG", quality=95)
    rotated, _ = _render(stored, tmp_path / "a")
    unrotated, _ = _render(plain, tmp_path / "b")
    assert thumbhash_aspect_ratio(base64.b64decode(rotated)) > 1  # displayed landscape
    assert thumbhash_aspect_ratio(base64.b64decode(unrotated)) < 1  # the stored portrait


def test_alpha_is_kept(tmp_path: Path) -> None:
    """A transparent source's placeholder is transparent where the picture is."""
    source = tmp_path / "alpha.png"
    transparent_square(200).save(source)
    _, preview = _render(source, tmp_path / "out")
    assert preview.getpixel((0, 0))[3] < 64  # a transparent corner
    assert preview.getpixel((16, 16))[3] > 200  # the opaque middle


def test_the_placeholder_is_made_when_only_missing_renditions_are_rendered(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src.png"
    pattern(300, 200).save(source)
    full = render_renditions(source, tmp_path / "a", SPEC, SHA)
    only = render_renditions(source, tmp_path / "b", SPEC, SHA, only=frozenset({"large.webp"}))
    assert [r.filename for r in only.renditions] == ["large.webp"]
    assert only.placeholder == full.placeholder is not None


def test_the_manifest_carries_the_placeholder_and_old_ones_still_read(tmp_path: Path) -> None:
    source = tmp_path / "src.png"
    pattern(300, 200).save(source)
    result = render_renditions(source, tmp_path, SPEC, SHA)
    manifest = json.loads(json.dumps(manifest_dict(result)))
    assert manifest["placeholder"] == result.placeholder
    read = render_result_from_manifest(manifest)
    assert read is not None and read.placeholder == result.placeholder
    del manifest["placeholder"]
    older = render_result_from_manifest(manifest)
    assert older is not None and older.placeholder is None
    assert older.renditions == result.renditions


def test_pixelmill_run_writes_it_and_keeps_it_when_adding_presets(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Through the CLI: in manifest.json and the report; a later run with one more preset
    (only that one rendered, the manifest merged) keeps it."""
    pattern(500, 300).save(tmp_path / "photo.png")
    (tmp_path / "one.json").write_text('{"thumb": [100, 100]}')
    (tmp_path / "two.json").write_text(
        '{"thumb": [100, 100], "card": {"width": 120, "height": 120, "fit": "cover",'
        ' "gravity": "entropy", "formats": ["png"]}}'
    )
    first = runner.invoke(
        app, ["run", "photo.png", "-o", "out", "--presets", "one.json", "--report", "r1.json"]
    )
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "r1.json").read_text())
    (image,) = report["images"]
    assert image["placeholder"]
    folder = tmp_path / "out" / "renditions" / image["sha256"][:2] / image["sha256"]
    assert json.loads((folder / "manifest.json").read_text())["placeholder"] == image["placeholder"]

    second = runner.invoke(
        app, ["run", "photo.png", "-o", "out", "--presets", "two.json", "--report", "r2.json"]
    )
    assert second.exit_code == 0, second.output
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["placeholder"] == image["placeholder"]
    listed = {(r["path"], r["width"], r["height"]) for r in manifest["renditions"]}
    assert listed == {("thumb.jpg", 100, 60), ("thumb.webp", 100, 60), ("card.png", 120, 120)}
