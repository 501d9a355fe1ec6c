"""Presets beyond fit inside: cover crops with gravity, per-preset formats and quality."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageOps

from images import format_by_magic, mean_abs_diff, pattern
from pixelmill.core import manifest_dict, render_renditions
from pixelmill.core.specs import (
    DEFAULT_PRESETS,
    Fit,
    Gravity,
    OutputFormat,
    Preset,
    RenderSpec,
)
from pixelmill.storage.base import renditions_to_render

SHA = "ab" * 32
JPEG, WEBP, PNG, AVIF = OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.PNG, OutputFormat.AVIF
# A resampled rendition against a direct crop + LANCZOS of the full decode (the pipeline
# decodes JPEG scaled and reduces first): well under this. A crop one sixth off is far above.
SAME_CROP = 2.5


def cover(name: str, width: int, height: int, gravity: Gravity = Gravity.CENTER) -> Preset:
    return Preset(name, width, height, Fit.COVER, gravity)


def reference_cover(
    upright: Image.Image, width: int, height: int, anchor: float = 0.5
) -> Image.Image:
    """What a cover crop must look like, computed the plain way: the box's aspect cut from
    the upright source (``anchor`` 0.5: the middle), then one LANCZOS resize."""
    source_width, source_height = upright.size
    if source_width * height > source_height * width:
        crop_width, crop_height = source_height * width / height, float(source_height)
    else:
        crop_width, crop_height = float(source_width), source_width * height / width
    left = (source_width - crop_width) * anchor
    top = (source_height - crop_height) * anchor
    box = (left, top, left + crop_width, top + crop_height)
    return upright.resize((width, height), Image.Resampling.LANCZOS, box=box)


def _decoded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _source(tmp_path: Path, image: Image.Image, name: str = "src.png") -> Path:
    path = tmp_path / name
    image.save(path)
    return path


@pytest.mark.parametrize(("width", "height"), [(640, 400), (400, 640)])
@pytest.mark.parametrize(("box_width", "box_height"), [(300, 300), (300, 120), (90, 200)])
def test_cover_fills_the_box_exactly_with_the_middle_of_the_picture(
    tmp_path: Path, width: int, height: int, box_width: int, box_height: int
) -> None:
    """Landscape and portrait sources: the box exactly, pixels of a direct centre crop."""
    upright = pattern(width, height)
    spec = RenderSpec(presets=(*DEFAULT_PRESETS, cover("card", box_width, box_height)))
    spec = RenderSpec(presets=spec.presets, formats=(PNG,))
    result = render_renditions(_source(tmp_path, upright), tmp_path / "out", spec, SHA)
    card = next(r for r in result.renditions if r.name == "card")
    assert (card.width, card.height) == (box_width, box_height)
    rendered = _decoded(tmp_path / "out" / "card.png")
    assert rendered.size == (box_width, box_height)
    assert mean_abs_diff(rendered, reference_cover(upright, box_width, box_height)) < SAME_CROP
    # The comparison can fail: a crop from the first edge instead of the middle is far off.
    if (width > height) == (box_width / box_height < width / height):
        wrong = reference_cover(upright, box_width, box_height, anchor=0.0)
        assert mean_abs_diff(rendered, wrong) > 4 * SAME_CROP


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["Landscape_1", "Landscape_6", "Portrait_1", "Portrait_8"])
def test_cover_of_exif_rotated_photos_crops_the_upright_picture(
    corpus: Path, tmp_path: Path, name: str
) -> None:
    """EXIF-rotated corpus photos: the crop is taken from the picture as displayed."""
    source = corpus / "exif_orientation" / f"{name}.jpg"
    with Image.open(source) as stored:
        upright = ImageOps.exif_transpose(stored).convert("RGB")
    spec = RenderSpec(presets=(*DEFAULT_PRESETS, cover("wide", 600, 250)), formats=(PNG,))
    result = render_renditions(source, tmp_path, spec, SHA)
    assert [(r.width, r.height) for r in result.renditions if r.name == "wide"] == [(600, 250)]
    rendered = _decoded(tmp_path / "wide.png")
    assert mean_abs_diff(rendered, reference_cover(upright, 600, 250)) < SAME_CROP
    wrong = reference_cover(upright.transpose(Image.Transpose.ROTATE_180), 600, 250)
    assert mean_abs_diff(rendered, wrong) > 4 * SAME_CROP


@pytest.mark.parametrize(
    ("box", "expected"),
    [((400, 400), (100, 100)), ((300, 600), (50, 100)), ((900, 200), (200, 44))],
)
def test_cover_of_a_smaller_source_crops_to_the_aspect_and_never_upscales(
    tmp_path: Path, box: tuple[int, int], expected: tuple[int, int]
) -> None:
    """A 200 x 100 source in a bigger box: the box's aspect at the source's scale, a plain
    crop of the middle (no resampling: the pixels are the source's own)."""
    upright = pattern(200, 100)
    spec = RenderSpec(presets=(cover("big", *box),), formats=(PNG,))
    result = render_renditions(_source(tmp_path, upright), tmp_path / "out", spec, SHA)
    assert [(r.width, r.height) for r in result.renditions] == [expected]
    rendered = _decoded(tmp_path / "out" / "big.png")
    left = (200 - expected[0]) // 2
    top = (100 - expected[1]) // 2
    crop = upright.crop((left, top, left + expected[0], top + expected[1]))
    assert mean_abs_diff(rendered, crop) == 0
    assert abs(expected[0] * box[1] / box[0] - expected[1]) <= 1  # the box's aspect, to 1 px


BACKGROUND = (128, 128, 128)


def busy_patch_image(size: tuple[int, int], patch: tuple[int, int, int, int]) -> Image.Image:
    """A flat grey picture with one textured, saturated patch (the salient, busy region)."""
    image = Image.new("RGB", size, BACKGROUND)
    rng = random.Random(7)
    colours = [(230, 30, 30), (30, 200, 40), (250, 220, 0), (20, 60, 240), (240, 90, 200)]
    left, top, right, bottom = patch
    for y in range(top, bottom, 4):
        for x in range(left, right, 4):
            image.paste(rng.choice(colours), (x, y, min(x + 4, right), min(y + 4, bottom)))
    return image


def _patch_pixels(image: Image.Image) -> int:
    """How many pixels are clearly not the grey background."""
    grey = Image.new("RGB", image.size, BACKGROUND)
    difference = ImageChops.difference(image.convert("RGB"), grey).convert("L")
    return difference.point(lambda v: 255 if v > 40 else 0).histogram()[255]


GRAVITY_CASES = [
    # 1200 x 600, a patch near the right edge, a 300 x 300 box: the crop is resampled.
    ((1200, 600), (940, 180, 1180, 420), (300, 300), 0.5),
    # 300 x 600, a patch near the top, a 300 x 300 box: a plain crop at the source's scale.
    ((300, 600), (90, 20, 210, 140), (300, 300), 1.0),
]


@pytest.mark.parametrize(("size", "patch", "box", "scale"), GRAVITY_CASES)
@pytest.mark.parametrize("gravity", [Gravity.ATTENTION, Gravity.ENTROPY])
def test_attention_and_entropy_keep_the_busy_salient_region(
    tmp_path: Path,
    size: tuple[int, int],
    patch: tuple[int, int, int, int],
    box: tuple[int, int],
    scale: float,
    gravity: Gravity,
) -> None:
    """The crop keeps the whole textured patch; center, on the same picture, misses it."""
    source = _source(tmp_path, busy_patch_image(size, patch))
    spec = RenderSpec(
        presets=(cover("focus", *box, gravity), cover("middle", *box)), formats=(PNG,)
    )
    render_renditions(source, tmp_path / "out", spec, SHA)
    patch_area = (patch[2] - patch[0]) * (patch[3] - patch[1]) * scale * scale
    kept = _patch_pixels(_decoded(tmp_path / "out" / "focus.png"))
    assert kept > 0.9 * patch_area, (kept, patch_area)
    assert _patch_pixels(_decoded(tmp_path / "out" / "middle.png")) < 0.05 * patch_area


@pytest.mark.parametrize("gravity", [Gravity.ATTENTION, Gravity.ENTROPY])
def test_gravity_is_deterministic(tmp_path: Path, gravity: Gravity) -> None:
    """The same source renders the same crop, byte for byte, every time."""
    source = _source(tmp_path, busy_patch_image((900, 500), (600, 100, 800, 300)))
    spec = RenderSpec(presets=(cover("focus", 200, 200, gravity),), formats=(PNG,))
    first = render_renditions(source, tmp_path / "one", spec, SHA)
    second = render_renditions(source, tmp_path / "two", spec, SHA)
    assert first.renditions == second.renditions
    assert (tmp_path / "one/focus.png").read_bytes() == (tmp_path / "two/focus.png").read_bytes()


def test_gravity_needs_cover() -> None:
    with pytest.raises(ValueError, match="cover"):
        Preset("card", 10, 10, Fit.INSIDE, Gravity.ENTROPY)


CATALOGUE = RenderSpec(
    presets=(
        Preset("only_jpeg", 120, 120, formats=(JPEG,)),
        Preset("shared", 100, 100),
        Preset("modern", 80, 80, formats=(AVIF, WEBP)),
    ),
    formats=(WEBP, PNG),
)


def test_each_preset_renders_exactly_its_own_formats(tmp_path: Path) -> None:
    """A preset with formats renders only those; one without renders the spec's."""
    expected = [
        "only_jpeg.jpg",
        "shared.webp",
        "shared.png",
        "modern.avif",
        "modern.webp",
    ]
    assert CATALOGUE.rendition_names() == expected
    source = _source(tmp_path, pattern(300, 200))
    result = render_renditions(source, tmp_path / "out", CATALOGUE, SHA)
    assert [r.filename for r in result.renditions] == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected)
    for rendition in result.renditions:
        data = (tmp_path / "out" / rendition.filename).read_bytes()
        assert format_by_magic(data) == rendition.format.value


def test_a_request_subset_intersects_each_presets_own_formats() -> None:
    """select: a preset keeps the formats it shares with the request; none left, dropped."""
    webp = CATALOGUE.select(formats=[WEBP])
    assert webp.rendition_names() == ["shared.webp", "modern.webp"]
    jpeg = CATALOGUE.select(formats=[JPEG])
    assert jpeg.rendition_names() == ["only_jpeg.jpg", "shared.jpg"]
    both = CATALOGUE.select(presets=["modern", "only_jpeg"], formats=[WEBP, JPEG, AVIF])
    assert both.rendition_names() == ["only_jpeg.jpg", "modern.avif", "modern.webp"]
    assert CATALOGUE.select(presets=["modern"]).rendition_names() == ["modern.avif", "modern.webp"]
    with pytest.raises(ValueError, match="leaves no rendition"):
        CATALOGUE.select(presets=["only_jpeg", "modern"], formats=[PNG])
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        CATALOGUE.select(presets=["huge"])


def test_a_presets_own_quality_overrides_the_default(tmp_path: Path) -> None:
    """Same size, lower per-preset quality: smaller files; other presets keep the default."""
    low = ((JPEG, 30), (WEBP, 30))
    spec = RenderSpec(presets=(Preset("low", 400, 400, quality=low), Preset("normal", 400, 400)))
    assert spec.quality_of(JPEG, spec.presets[0]) == 30
    assert spec.quality_of(JPEG, spec.presets[1]) == spec.quality_of(JPEG) == 85
    source = _source(tmp_path, busy_patch_image((600, 400), (0, 0, 600, 400)))
    result = render_renditions(source, tmp_path / "out", spec, SHA)
    sizes = {r.filename: r.bytes for r in result.renditions}
    assert sizes["low.jpg"] < 0.8 * sizes["normal.jpg"]
    assert sizes["low.webp"] < 0.8 * sizes["normal.webp"]


def test_a_stored_cover_rendition_is_not_rendered_again(tmp_path: Path) -> None:
    """The storage's "what is missing" check expects a cover rendition at the box's size."""
    spec = RenderSpec(presets=(cover("card", 200, 200), Preset("thumb", 100, 100)))
    result = render_renditions(_source(tmp_path, pattern(640, 400)), tmp_path, spec, SHA)
    manifest = json.loads(json.dumps(manifest_dict(result)))
    assert renditions_to_render(manifest, spec) == frozenset()
    moved = RenderSpec(presets=(cover("card", 200, 150), Preset("thumb", 100, 100)))
    assert renditions_to_render(manifest, moved) == {"card.jpg", "card.webp"}


def test_a_task_message_carries_the_new_preset_fields() -> None:
    """The distributed engine's JSON message round-trips every preset field; old messages
    with ``[name, width, height]`` presets still read."""
    pytest.importorskip("celery")
    from pixelmill.engine.celery_app import spec_from_dict, spec_to_dict

    spec = RenderSpec(
        presets=(
            Preset("card", 1200, 630, Fit.COVER, Gravity.ATTENTION, (JPEG, WEBP), ((JPEG, 70),)),
            Preset("thumb", 150, 150),
        )
    )
    message = json.loads(json.dumps(spec_to_dict(spec)))
    assert spec_from_dict(message) == spec
    old = dict(message, presets=[["thumb", 150, 150], ["large", 1920, 1920]])
    assert spec_from_dict(old).presets == (Preset("thumb", 150, 150), Preset("large", 1920, 1920))


@pytest.mark.parametrize("box", [(200, 1920), (100, 1000)])
def test_the_engines_memory_estimate_covers_what_a_cover_preset_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, box: tuple[int, int]
) -> None:
    """A tall cover box on a wide photo keeps far more of the source than the largest box
    suggests; the estimate the engine admits renders by must cover what is decoded."""
    from pixelmill.core import render as render_module
    from pixelmill.engine.admission import decode_cost

    source = tmp_path / "wide.jpg"
    Image.effect_noise((1200, 300), 50).resize((12000, 3000)).convert("RGB").save(source)
    spec = RenderSpec(presets=(cover("banner", *box),), formats=(OutputFormat.JPEG,))
    decoded: list[int] = []
    real_decode = render_module._decode

    def measuring_decode(image: Image.Image, *args: object) -> None:
        real_decode(image, *args)  # type: ignore[arg-type]
        decoded.append(image.width * image.height * len(image.getbands()))

    monkeypatch.setattr(render_module, "_decode", measuring_decode)
    render_renditions(source, tmp_path / "out", spec, SHA)
    assert decoded and decoded[0] <= decode_cost(str(source), spec)
