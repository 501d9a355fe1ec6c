"""``pixelmill`` options beyond the render itself: --version, skipped non-images, --quality,
help text, and ``serve --data-dir/--workers``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api_server import free_port, wait_until_healthy
from pixelmill.cli import app, describe_deployment, describe_pages
from pixelmill.config import Settings
from test_cli import clean_env, invoke, read_report, write_photo


def test_version_flag_prints_the_installed_version_and_exits_0() -> None:
    """Through the installed entry point, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "pixelmill", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"pixelmill {metadata.version('pixelmill')}\n"


def test_non_images_in_a_folder_walk_are_skipped_and_do_not_fail_the_run(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A licence and a text file named like a photo: skipped by their magic bytes, exit 0."""
    write_photo(tmp_path / "photos" / "a.jpg", seed=1)
    (tmp_path / "photos" / "LICENSE").write_text("Permission is hereby granted...\n")
    (tmp_path / "photos" / "notes.jpg").write_text("not an image, whatever its name says\n")
    result = invoke(runner, "photos", "-o", "out", "--report", "r.json")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "r.json")
    statuses = {Path(i["source"]).name: i["status"] for i in report["images"]}
    assert statuses == {"LICENSE": "skipped", "a.jpg": "done", "notes.jpg": "skipped"}
    for image in report["images"]:
        if image["status"] == "skipped":
            assert image["error"] is None and image["renditions"] == []
    summary = report["summary"]
    assert (summary["total"], summary["done"], summary["skipped"], summary["failed"]) == (
        3,
        1,
        2,
        0,
    )
    assert "2 skipped" in result.stderr


def test_a_non_image_named_on_the_command_line_still_fails(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "notes.jpg").write_text("not an image\n")
    result = invoke(runner, "notes.jpg", "-o", "out", "--report", "r.json")
    assert result.exit_code == 1, result.output
    (image,) = read_report(tmp_path / "r.json")["images"]
    assert image["status"] == "failed"
    assert image["error"]["code"] == "unsupported_format"
    assert "0 skipped" in result.stderr


def rendition_bytes(report_path: Path) -> dict[tuple[str, str], int]:
    """{(preset, format): bytes} of the one image in a report; each file has those bytes."""
    (image,) = read_report(report_path)["images"]
    for rendition in image["renditions"]:
        assert (report_path.parent / rendition["path"]).stat().st_size == rendition["bytes"]
    return {(r["name"], r["format"]): r["bytes"] for r in image["renditions"]}


def test_quality_flag_overrides_the_encoder_quality_of_the_run(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A lower quality gives smaller renditions, only for the formats it names."""
    write_photo(tmp_path / "a.jpg", (640, 480))
    common = ["a.jpg", "--formats", "jpeg,webp,png", "--no-progress"]
    assert invoke(runner, *common, "-o", "default", "--report", "d.json").exit_code == 0
    low = invoke(runner, *common, "-o", "low", "--report", "l.json", "--quality", "jpeg=20,webp=15")
    assert low.exit_code == 0, low.output
    default, lowered = rendition_bytes(tmp_path / "d.json"), rendition_bytes(tmp_path / "l.json")
    assert default.keys() == lowered.keys()
    for (name, fmt), size in default.items():
        if fmt == "png":
            assert lowered[name, fmt] == size
        else:
            assert lowered[name, fmt] < size * 0.8, (name, fmt, lowered[name, fmt], size)


@pytest.mark.parametrize(
    ("quality", "message"),
    [
        ("png=50", "png is lossless"),
        ("jpeg=0", "must be 1-100"),
        ("webp=101", "must be 1-100"),
        ("jpeg=high", "must be 1-100"),
        ("gif=50", "unknown format 'gif'"),
        ("jpeg80", "is not FORMAT=QUALITY"),
        ("jpeg=80,", "is not FORMAT=QUALITY"),
        ("jpeg=80,jpg=70", "given twice"),
    ],
)
def test_a_bad_quality_is_one_line_and_exit_2(
    runner: CliRunner, tmp_path: Path, quality: str, message: str
) -> None:
    write_photo(tmp_path / "a.jpg")
    result = invoke(runner, "a.jpg", "-o", "out", "--quality", quality)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("command", "literals"),
    [
        ([], ["--version"]),
        (
            ["run"],
            [
                '{"name": [w, h]}',
                "[default: CPU count]",
                "[default: jpeg=85,webp=80,avif=60]",
                "--quality",
            ],
        ),
        (
            ["serve"],
            ["[default: 127.0.0.1]", "[default: 8000]", "--data-dir", "--workers"],
        ),
        (["worker"], ["[default: CPU count]"]),
    ],
    ids=["pixelmill", "run", "serve", "worker"],
)
def test_help_shows_its_brackets_literally(command: list[str], literals: list[str]) -> None:
    """Markup never eats help text: what the source says in brackets is what a user reads."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for literal in literals:
        assert literal in result.output, (literal, result.output)
    assert "\\[" not in result.output


def test_serve_flags_override_the_environment_and_the_start_line_names_them(
    tmp_path: Path,
) -> None:
    """``serve --data-dir --workers`` win over PIXELMILL_DATA_DIR/WORKERS; the first log line
    says where the data lives and what renders it (real command, real HTTP)."""
    flag_dir, env_dir = tmp_path / "flag-data", tmp_path / "env-data"
    port = free_port()
    args = [sys.executable, "-m", "pixelmill", "serve", "--port", str(port)]
    args += ["--data-dir", str(flag_dir), "--workers", "1"]
    env = clean_env(PIXELMILL_DATA_DIR=str(env_dir), PIXELMILL_WORKERS="3")
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            args, env=env, stdout=log, stderr=log, cwd=tmp_path, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url)
        assert httpx.get(f"{url}/healthz", timeout=10).json()["workers"] == 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
    assert (flag_dir / "pixelmill.db").is_file()
    assert not env_dir.exists()
    lines = (tmp_path / "serve.log").read_text().splitlines()
    start = f"data dir {flag_dir.resolve()}, store sqlite, engine local, 1 worker"
    assert [line for line in lines if start in line], lines
    assert "INFO" in next(line for line in lines if start in line)  # uvicorn's logger
    pages = f"dashboard at http://127.0.0.1:{port}/, API docs at http://127.0.0.1:{port}/docs"
    assert [line for line in lines if pages in line], lines


def test_the_pages_line_brackets_an_ipv6_host() -> None:
    assert describe_pages("::1", 8000) == (
        "dashboard at http://[::1]:8000/, API docs at http://[::1]:8000/docs"
    )


def test_the_start_line_hides_the_store_password() -> None:
    settings = Settings(store="redis://app:s3cret@127.0.0.1:6379/0", workers=4)
    line = describe_deployment(settings)
    assert "s3cret" not in line
    assert "127.0.0.1:6379/0" in line and "4 workers" in line


def test_serve_workers_out_of_range_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", "--workers", "0", "--data-dir", "d"])
    assert result.exit_code == 2, result.output
    assert "--workers must be 1-256" in result.stderr
