"""EXIF orientation: every orientation renders upright, and the output carries no EXIF."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from images import mean_abs_diff, pattern
from pixelmill.core import OutputFormat, Preset, RenderSpec, render_renditions

SPEC = RenderSpec(
    presets=(Preset("thumbnail", 150, 150), Preset("medium", 800, 800)),
    formats=(OutputFormat.JPEG, OutputFormat.WEBP),
)
# JPEG/WebP noise between two renders of the same picture stays well under this; a mirrored
# or rotated picture is far above it (checked below, so the comparison can fail).
SAME_PICTURE = 4.0

# What a writer does to upright pixels so that a viewer applying orientation N sees them
# upright again: the inverse of each EXIF orientation's transform.
_STORE_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _render(source: Path, out: Path) -> dict[str, Image.Image]:
    result = render_renditions(source, out, SPEC, "0" * 64)
    decoded = {}
    for r in result.renditions:
        with Image.open(out / r.filename) as image:
            assert "exif" not in image.info, r.filename
            assert image.getexif().get(0x0112) is None, r.filename
            decoded[r.filename] = image.convert("RGB")
    return decoded


@pytest.mark.corpus
@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
@pytest.mark.parametrize("n", range(9))
def test_corpus_orientation_matches_upright(
    kind: str, n: int, corpus: Path, tmp_path: Path
) -> None:
    """<kind>_N renders like the upright <kind>_1, with no orientation tag in the output."""
    folder = corpus / "exif_orientation"
    upright = _render(folder / f"{kind}_1.jpg", tmp_path / "upright")
    oriented = _render(folder / f"{kind}_{n}.jpg", tmp_path / "oriented")
    assert upright.keys() == oriented.keys()
    for name, reference in upright.items():
        assert oriented[name].size == reference.size, name
        assert mean_abs_diff(oriented[name], reference) < SAME_PICTURE, name


@pytest.mark.corpus
def test_wrong_orientation_is_detected(corpus: Path, tmp_path: Path) -> None:
    """The comparison fails for a mirrored or rotated picture, so the test above can fail."""
    upright = _render(corpus / "exif_orientation/Landscape_1.jpg", tmp_path)["medium.jpg"]
    for wrong in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_180):
        assert mean_abs_diff(upright.transpose(wrong), upright) > 5 * SAME_PICTURE


@pytest.mark.parametrize("orientation", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255])
def test_generated_orientation_renders_upright(orientation: int, tmp_path: Path) -> None:
    """A JPEG stored rotated with EXIF orientation N renders as the upright picture."""
    upright = pattern(320, 200)
    stored = upright.transpose(_STORE_AS[orientation]) if orientation in _STORE_AS else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = tmp_path / "source.jpg"
    stored.save(source, "JPEG", quality=95, exif=exif)
    renditions = _render(source, tmp_path / "out")
    medium = renditions["medium.jpg"]
    assert medium.size == upright.size
    assert mean_abs_diff(medium, upright) < SAME_PICTURE
    wrong = upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert mean_abs_diff(medium, wrong) > 5 * SAME_PICTURE
