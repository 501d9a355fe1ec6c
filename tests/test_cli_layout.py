"""``pixelmill run --layout mirror``: readable output names, one set of files per source."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from test_cli import files_under, invoke, read_report, write_photo


def test_mirror_layout_writes_readable_names_and_nothing_else(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Nested sources, a copy of the same bytes and a non-image: every image gets its own
    files at OUT/<path without extension>/<preset>.<ext>; no content-addressed tree is left."""
    write_photo(tmp_path / "photos" / "a.jpg", (400, 300), seed=1)
    write_photo(tmp_path / "photos" / "trip" / "b.png", (300, 400), seed=2)
    (tmp_path / "photos" / "trip" / "copy-of-a.jpg").write_bytes(
        (tmp_path / "photos" / "a.jpg").read_bytes()
    )
    (tmp_path / "photos" / "LICENSE").write_text("all rights reserved\n")
    write_photo(tmp_path / "loose.jpg", (90, 60), seed=3)
    result = invoke(
        runner,
        "photos",
        "loose.jpg",
        "-o",
        "out",
        "--layout",
        "mirror",
        "--formats",
        "jpeg,webp",
        "--report",
        "r.json",
    )
    assert result.exit_code == 0, result.output
    expected = {
        f"{folder}/{preset}.{ext}"
        for folder in ("a", "trip/b", "trip/copy-of-a", "loose")
        for preset in ("thumbnail", "medium", "large")
        for ext in ("jpg", "webp")
    }
    assert {p.relative_to(tmp_path / "out").as_posix() for p in files_under(tmp_path / "out")} == (
        expected
    )
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # the work folder is gone
    report = read_report(tmp_path / "r.json")
    statuses = {i["source"]: i["status"] for i in report["images"]}
    assert statuses == {
        "photos/LICENSE": "skipped",
        "photos/a.jpg": "done",
        "photos/trip/b.png": "done",
        "photos/trip/copy-of-a.jpg": "duplicate",
        "loose.jpg": "done",
    }
    for image in report["images"]:
        for rendition in image["renditions"]:
            path = tmp_path / rendition["path"]
            assert path.stat().st_size == rendition["bytes"]
            with Image.open(path) as opened:
                assert opened.size == (rendition["width"], rendition["height"])
    with Image.open(tmp_path / "out" / "trip" / "b" / "large.jpg") as large:
        assert large.size == (300, 400)
    original = (tmp_path / "out" / "a" / "large.webp").stat()
    copy = (tmp_path / "out" / "trip" / "copy-of-a" / "large.webp").stat()
    assert original.st_ino != copy.st_ino  # each source has files of its own


def test_a_rerun_in_mirror_layout_renders_again_and_replaces_the_files(
    runner: CliRunner, tmp_path: Path
) -> None:
    write_photo(tmp_path / "in" / "a.jpg", (400, 300))
    assert invoke(runner, "in", "-o", "out", "--layout", "mirror").exit_code == 0
    first = {path: path.stat().st_size for path in files_under(tmp_path / "out")}
    again = invoke(runner, "in", "-o", "out", "--layout", "mirror", "--quality", "jpeg=10")
    assert again.exit_code == 0, again.output
    second = {path: path.stat().st_size for path in files_under(tmp_path / "out")}
    assert second.keys() == first.keys() and len(first) == 6
    for path, size in first.items():
        assert (second[path] < size) if path.suffix == ".jpg" else (second[path] == size)
    assert not list((tmp_path / "out").rglob(".*"))


def test_two_sources_for_one_mirror_folder_are_a_usage_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    """``a.jpg`` and ``a.png`` would both write OUT/a: refused before anything is written."""
    write_photo(tmp_path / "in" / "a.jpg", seed=1)
    write_photo(tmp_path / "in" / "a.png", seed=2)
    result = invoke(runner, "in", "-o", "out", "--layout", "mirror")
    assert result.exit_code == 2, result.output
    assert "in/a.jpg and in/a.png would both write out/a" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_folder_inside_the_source_is_not_walked_in_mirror_layout(
    runner: CliRunner, tmp_path: Path
) -> None:
    write_photo(tmp_path / "a.jpg")
    assert invoke(runner, ".", "-o", "out", "--layout", "mirror").exit_code == 0
    second = invoke(runner, ".", "-o", "out", "--layout", "mirror", "--report", "r.json")
    assert second.exit_code == 0, second.output
    assert [i["source"] for i in read_report(tmp_path / "r.json")["images"]] == ["./a.jpg"]
