"""Properties (hypothesis): fitting a box, and rendering images of any size and mode."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from images import ALL_MODES, format_by_magic, source_file
from pixelmill.core import OutputFormat, Preset, RenderSpec, render_renditions
from pixelmill.core.imaging import fit_size

sides = st.integers(min_value=1, max_value=100_000)
boxes = st.integers(min_value=1, max_value=5_000)


@given(width=sides, height=sides, box_w=boxes, box_h=boxes)
def test_fit_size_fits_keeps_ratio_never_upscales(
    width: int, height: int, box_w: int, box_h: int
) -> None:
    """fit_size fits the box, never grows, and each side is within 1 px of the exact fit."""
    out_w, out_h = fit_size(width, height, box_w, box_h)
    assert 1 <= out_w <= min(width, box_w)
    assert 1 <= out_h <= min(height, box_h)
    scale = min(box_w / width, box_h / height, 1.0)
    assert abs(out_w - width * scale) <= 1
    assert abs(out_h - height * scale) <= 1
    # At least one side uses the box (or the source) fully: the fit is the largest one.
    assert out_w == min(width, box_w) or out_h == min(height, box_h)


@given(width=sides, height=sides)
def test_fit_size_keeps_a_source_inside_the_box(width: int, height: int) -> None:
    """A source already inside the box keeps its exact size."""
    assert fit_size(width, height, width + 1, height) == (width, height)


SPEC = RenderSpec(
    presets=(Preset("thumbnail", 150, 150), Preset("medium", 400, 300)),
    formats=(OutputFormat.JPEG, OutputFormat.PNG),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    width=st.integers(min_value=1, max_value=900),
    height=st.integers(min_value=1, max_value=900),
    mode=st.sampled_from(ALL_MODES),
)
def test_any_generated_image_renders_within_its_boxes(width: int, height: int, mode: str) -> None:
    """An image of any size and mode renders every rendition, fitted, as a real file."""
    with tempfile.TemporaryDirectory() as folder:
        source = source_file(Path(folder), mode, width, height)
        out = Path(folder) / "out"
        result = render_renditions(source, out, SPEC, "0" * 64)
        assert [r.filename for r in result.renditions] == SPEC.rendition_names()
        boxes = {p.name: p for p in SPEC.presets}
        for r in result.renditions:
            box = boxes[r.name]
            assert (r.width, r.height) == fit_size(width, height, box.width, box.height)
            data = (out / r.filename).read_bytes()
            assert format_by_magic(data) == r.format.value
            with Image.open(out / r.filename) as image:
                assert image.size == (r.width, r.height)
