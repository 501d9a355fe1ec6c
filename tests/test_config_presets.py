"""Presets file entries as objects: fit, gravity, formats and quality, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelmill.config import ConfigError, load_presets
from pixelmill.core.specs import Fit, Gravity, OutputFormat, Preset
from test_config import assert_one_line_usage_error, run_cli


def _load(tmp_path: Path, content: object) -> tuple[Preset, ...]:
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(content))
    return load_presets(path)


def test_an_object_entry_carries_fit_gravity_formats_and_quality(tmp_path: Path) -> None:
    """Every key of an object entry reaches the Preset; omitted ones keep today's behaviour."""
    presets = _load(
        tmp_path,
        {
            "social": {
                "width": 1200,
                "height": 630,
                "fit": "cover",
                "gravity": "attention",
                "formats": ["jpg", "webp"],
                "quality": {"jpeg": 80},
            },
            "plain": {"width": 300, "height": 200},
            "listed": [150, 150],
        },
    )
    social, plain, listed = presets
    assert social == Preset(
        "social",
        1200,
        630,
        Fit.COVER,
        Gravity.ATTENTION,
        (OutputFormat.JPEG, OutputFormat.WEBP),
        ((OutputFormat.JPEG, 80),),
    )
    assert plain == Preset("plain", 300, 200) and plain.fit is Fit.INSIDE
    assert plain.formats is None and plain.quality == ()
    assert listed == Preset("listed", 150, 150)
    assert hash(social)  # plain hashable values: a spec holding it stays hashable


def test_cover_without_gravity_is_center(tmp_path: Path) -> None:
    (cover,) = _load(tmp_path, {"card": {"width": 400, "height": 400, "fit": "cover"}})
    assert cover.fit is Fit.COVER and cover.gravity is Gravity.CENTER


BAD_ENTRIES = [
    ({"width": 10, "height": 10, "crop": "yes"}, "unknown key 'crop'"),
    ({"width": 10, "height": 10, "gravity": "entropy"}, 'gravity needs "fit": "cover"'),
    ({"width": 10, "height": 10, "fit": "inside", "gravity": "center"}, "gravity needs"),
    ({"width": 10, "height": 10, "fit": "fill"}, "fit must be one of 'inside', 'cover'"),
    ({"width": 10, "height": 10, "fit": "cover", "gravity": "face"}, "gravity must be one of"),
    ({"width": 10, "height": 10, "formats": ["gif"]}, 'unknown format "gif"'),
    ({"width": 10, "height": 10, "formats": []}, "formats must be a list of one or more"),
    ({"width": 10, "height": 10, "formats": "jpeg"}, "formats must be a list"),
    ({"width": 10, "height": 10, "formats": ["jpeg", "jpg"]}, "names a format twice"),
    ({"width": 10, "height": 10, "quality": {"jpeg": 0}}, "quality of jpeg must be"),
    ({"width": 10, "height": 10, "quality": {"jpeg": 101}}, "1-100, got 101"),
    ({"width": 10, "height": 10, "quality": {"jpeg": "80"}}, "whole number"),
    ({"width": 10, "height": 10, "quality": {"png": 80}}, "png is lossless"),
    ({"width": 10, "height": 10, "quality": {"heic": 80}}, 'unknown format "heic"'),
    ({"width": 10, "height": 10, "quality": [80]}, "quality must be an object"),
    (
        {"width": 10, "height": 10, "formats": ["webp"], "quality": {"jpeg": 80}},
        "quality for jpeg, which the preset does not render",
    ),
    ({"height": 10}, "width is missing"),
    ({"width": 10, "height": 0}, "height must be a whole number from 1 to 65535"),
    ({"width": True, "height": 10}, "width must be a whole number from 1 to 65535"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_a_bad_object_entry_is_one_line_naming_file_and_entry(
    tmp_path: Path, entry: object, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, {"card": entry})
    text = str(raised.value)
    assert text.startswith(f"presets file {tmp_path / 'presets.json'}, entry 'card': "), text
    assert message in text and "\n" not in text


CLI_ERRORS = [
    ({"width": 10, "height": 10, "colour": "red"}, "unknown key 'colour'"),
    ({"width": 10, "height": 10, "gravity": "attention"}, "gravity needs"),
    ({"width": 10, "height": 10, "fit": "contain"}, "fit must be one of"),
    ({"width": 10, "height": 10, "formats": ["bmp"]}, "unknown format"),
    ({"width": 10, "height": 10, "quality": {"webp": 500}}, "quality of webp must be"),
]


@pytest.mark.parametrize(("entry", "message"), CLI_ERRORS)
def test_a_bad_object_entry_stops_pixelmill_run_with_one_line_and_exit_2(
    tmp_path: Path, entry: object, message: str
) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"card": entry}))
    result = run_cli(["run", ".", "-o", "out", "--presets", "p.json"], tmp_path)
    assert_one_line_usage_error(result, "p.json", "entry 'card'", message)
    assert not (tmp_path / "out").exists()


def test_a_bad_object_entry_stops_serve_too(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"card": {"width": 10, "height": 10, "fit": "crop"}}')
    result = run_cli(["serve", "--port", "1"], tmp_path, PIXELMILL_PRESETS_FILE="p.json")
    assert_one_line_usage_error(result, "p.json", "entry 'card'", "fit must be one of")


HOSTILE_FILES = [
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"big": [' + "9" * 400 + ", 100]}", "from 1 to 65535"),
    ('{"big": {"width": 70000, "height": 10}}', "width must be a whole number from 1 to 65535"),
    ('{"thumb\\n": [10, 10]}', "entry 'thumb\\n'"),
    ("[" + " " * (1024 * 1024) + "]", "is over 1048576 bytes"),
]


@pytest.mark.parametrize(("content", "message"), HOSTILE_FILES)
def test_a_hostile_presets_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str, message: str
) -> None:
    """Deep nesting, sizes no image has, a name ending in a newline, a huge file: each is
    one line naming the file (a traceback, or every image failing later, before)."""
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(ConfigError, match="presets file"):
        load_presets(tmp_path / "p.json")
    result = run_cli(["run", ".", "-o", "out", "--presets", "p.json"], tmp_path)
    assert_one_line_usage_error(result, "p.json", message)
