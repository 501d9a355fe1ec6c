"""``pixelmill run`` as a user runs it: exit codes, the report, the output tree, Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from images import format_by_magic, pattern, truncated_jpeg
from pixelmill.cli import app
from pixelmill.core.encode import TEMP_PREFIX

REPORT_KEYS = {"summary", "images"}
SUMMARY_KEYS = {"total", "done", "duplicate", "failed", "cancelled", "skipped", "elapsed_s"}
IMAGE_KEYS = {"source", "status", "sha256", "error", "renditions", "placeholder"}
RENDITION_KEYS = {"name", "format", "width", "height", "bytes", "path"}
DEFAULT_BOXES = {"thumbnail": (150, 150), "medium": (800, 800), "large": (1920, 1920)}
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}


def write_photo(path: Path, size: tuple[int, int] = (320, 240), seed: int = 0) -> Path:
    """A JPEG (or PNG, by suffix) of ``pattern`` with a seed-coloured block: new bytes per seed."""
    image = pattern(*size)
    ImageDraw.Draw(image).rectangle(
        (0, 0, size[0] // 5, size[1] // 5), fill=((seed * 53) % 256, (seed * 97) % 256, 17)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG" if path.suffix == ".png" else "JPEG", quality=90)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def temp_files_under(folder: Path) -> list[Path]:
    return list(folder.rglob(f"{TEMP_PREFIX}*"))


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PIXELMILL_* settings (so the machine's cannot leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMILL_")}
    env.update(extra)
    return env


def invoke(runner: CliRunner, *args: str) -> Any:
    """``pixelmill run ARGS`` in this process; exceptions are left for the result to hold."""
    return runner.invoke(app, ["run", *args])


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def check_report_shape(report: dict[str, Any]) -> None:
    """Exactly DESIGN.md's report keys at every level."""
    assert set(report) == REPORT_KEYS
    assert set(report["summary"]) == SUMMARY_KEYS
    for image in report["images"]:
        assert set(image) == IMAGE_KEYS, image
        for rendition in image["renditions"]:
            assert set(rendition) == RENDITION_KEYS, rendition


@pytest.fixture
def good_tree(tmp_path: Path) -> list[str]:
    """Good images in a nested folder plus a loose file; their walk order, as given on the CLI."""
    write_photo(tmp_path / "photos" / "b.jpg", seed=1)
    write_photo(tmp_path / "photos" / "a.png", (200, 300), seed=2)
    write_photo(tmp_path / "photos" / "zz" / "c.jpg", (1000, 700), seed=3)
    write_photo(tmp_path / "photos" / "aa" / "d.jpg", seed=4)
    write_photo(tmp_path / "photos" / ".hidden.jpg", seed=5)
    write_photo(tmp_path / "loose.jpg", (90, 60), seed=6)
    # os.walk order: a folder's files (sorted) before its subfolders (sorted); no dotfiles.
    return [
        os.path.join("photos", "a.png"),
        os.path.join("photos", "b.jpg"),
        os.path.join("photos", "aa", "d.jpg"),
        os.path.join("photos", "zz", "c.jpg"),
        "loose.jpg",
    ]


def test_good_images_exit_0_with_a_report_of_the_designed_shape(
    runner: CliRunner, tmp_path: Path, good_tree: list[str]
) -> None:
    """Good images: exit 0, a report of exactly DESIGN.md's shape, in walk order."""
    result = invoke(
        runner, "photos", "loose.jpg", "-o", "out", "--workers", "2", "--report", "rep.json"
    )
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "rep.json")
    check_report_shape(report)
    summary = report["summary"]
    assert {k: summary[k] for k in SUMMARY_KEYS - {"elapsed_s"}} == {
        "total": 5,
        "done": 5,
        "duplicate": 0,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
    }
    assert isinstance(summary["elapsed_s"], float) and summary["elapsed_s"] > 0
    assert [image["source"] for image in report["images"]] == good_tree
    for image in report["images"]:
        assert image["status"] == "done"
        assert image["error"] is None
        assert image["sha256"] == sha256_of(tmp_path / image["source"])


def test_report_rendition_paths_are_under_out_as_given_and_open_from_the_cwd(
    runner: CliRunner, tmp_path: Path, good_tree: list[str]
) -> None:
    """Each rendition path starts with OUT as typed, names a real file and matches its entry."""
    result = invoke(runner, "photos", "-o", "./out/", "--workers", "2", "--report", "rep.json")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "rep.json")
    assert len(report["images"]) == 4
    for image in report["images"]:
        sha = image["sha256"]
        with Image.open(image["source"]) as source:
            src_w, src_h = source.size
        names = sorted((r["name"], r["format"]) for r in image["renditions"])
        assert names == sorted((n, f) for n in DEFAULT_BOXES for f in ("jpeg", "webp"))
        for rendition in image["renditions"]:
            path = rendition["path"]
            assert path.startswith("./out/"), path
            expected_name = f"{rendition['name']}.{EXTENSIONS[rendition['format']]}"
            assert Path(path) == Path("out", "renditions", sha[:2], sha, expected_name)
            data = Path(path).read_bytes()  # relative: opened from the current directory
            assert len(data) == rendition["bytes"]
            assert format_by_magic(data) == rendition["format"]
            with Image.open(path) as rendered:
                assert rendered.size == (rendition["width"], rendition["height"])
            box_w, box_h = DEFAULT_BOXES[rendition["name"]]
            assert rendition["width"] <= min(box_w, src_w)
            assert rendition["height"] <= min(box_h, src_h)
    assert temp_files_under(tmp_path / "out") == []


def test_failed_images_exit_1_with_error_codes_and_failures_by_code(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A text file named by hand and a truncated JPEG among good ones: exit 1, coded errors,
    counts by code (a text file a folder walk finds is skipped instead: test_cli_options)."""
    folder = tmp_path / "mixed"
    write_photo(folder / "a.jpg", seed=1)
    truncated_jpeg(folder / "b-truncated.jpg")
    (tmp_path / "c-notes.jpg").write_text("not an image, whatever its name says\n")
    write_photo(folder / "d.jpg", seed=2)
    result = invoke(
        runner, "mixed", "c-notes.jpg", "-o", "out", "--workers", "2", "--report", "rep.json"
    )
    assert result.exit_code == 1, result.output
    report = read_report(tmp_path / "rep.json")
    check_report_shape(report)
    by_name = {Path(image["source"]).name: image for image in report["images"]}
    assert [by_name[n]["status"] for n in sorted(by_name)] == ["done", "failed", "failed", "done"]
    assert by_name["b-truncated.jpg"]["error"]["code"] == "corrupt_image"
    assert by_name["c-notes.jpg"]["error"]["code"] == "unsupported_format"
    for name in ("b-truncated.jpg", "c-notes.jpg"):
        error = by_name[name]["error"]
        assert set(error) == {"code", "message"}
        assert isinstance(error["message"], str) and error["message"]
        assert by_name[name]["renditions"] == []
    assert report["summary"]["failed"] == 2 and report["summary"]["done"] == 2
    assert "failed corrupt_image: 1" in result.stderr
    assert "failed unsupported_format: 1" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-folder", "-o", "out"], "no such file or folder"),
        (["-o", "out"], "Missing argument"),
        (["photos", "-o", "out", "--formats", "jpeg,gif"], "unknown format"),
        (["photos", "-o", "out", "--presets", "bad.json"], "not valid JSON"),
        (["photos", "-o", "out", "--presets", "absent.json"], "cannot read presets"),
        (["photos", "-o", "out", "--presets", "empty.json"], "no presets"),
        (["photos"], "Missing option"),
        (["photos", "-o", "out", "--workers", "0"], "--workers"),
        (["photos", "-o", "out", "--workers", "1000"], "--workers"),
    ],
    ids=[
        "missing-src",
        "no-src",
        "unknown-format",
        "bad-presets",
        "absent-presets",
        "empty-presets",
        "no-out",
        "zero-workers",
        "a-thousand-workers",
    ],
)
def test_usage_errors_exit_2_and_render_nothing(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    """Usage errors exit 2 with a message and write nothing under OUT."""
    write_photo(tmp_path / "photos" / "a.jpg")
    (tmp_path / "bad.json").write_text('{"small": [64, 64')
    (tmp_path / "empty.json").write_text("{}")
    result = invoke(runner, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_usage_error_messages_print_paths_verbatim(runner: CliRunner, tmp_path: Path) -> None:
    """A missing path that looks like console markup is named as typed, still exit 2."""
    result = invoke(runner, "photos[/x]", "[bold]y", "-o", "out")
    assert result.exit_code == 2, result.output
    assert "photos[/x], [bold]y" in result.stderr


def test_a_bad_setting_in_the_environment_is_a_usage_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``PIXELMILL_WORKERS=abc`` exits 2 naming the setting, before any work."""
    write_photo(tmp_path / "photos" / "a.jpg")
    monkeypatch.setenv("PIXELMILL_WORKERS", "abc")
    result = invoke(runner, "photos", "-o", "out")
    assert result.exit_code == 2, result.output
    assert "PIXELMILL_WORKERS='abc' is not valid" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    """``-o`` naming an existing file exits 2 instead of failing each image."""
    write_photo(tmp_path / "photos" / "a.jpg")
    (tmp_path / "out").write_text("a file, not a folder\n")
    result = invoke(runner, "photos", "-o", "out", "--workers", "1")
    assert result.exit_code == 2, result.output


def test_a_second_copy_in_one_run_is_a_duplicate_of_the_first(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Same bytes twice in one run: the first done, the copy duplicate with the same files."""
    first = write_photo(tmp_path / "in" / "a.jpg", seed=7)
    (tmp_path / "in" / "b-copy.jpg").write_bytes(first.read_bytes())
    result = invoke(runner, "in", "-o", "out", "--workers", "2", "--report", "rep.json")
    assert result.exit_code == 0, result.output
    original, copy = read_report(tmp_path / "rep.json")["images"]
    assert (original["status"], copy["status"]) == ("done", "duplicate")
    assert copy["sha256"] == original["sha256"] == sha256_of(first)
    assert copy["renditions"] == original["renditions"]
    assert len(list((tmp_path / "out" / "renditions").glob("*/*/manifest.json"))) == 1


def test_rerun_reports_every_image_duplicate_and_rewrites_nothing(
    runner: CliRunner, tmp_path: Path, good_tree: list[str]
) -> None:
    """A second run over the same folder: all duplicate, exit 0, no file touched."""
    first = invoke(runner, "photos", "loose.jpg", "-o", "out", "--workers", "2")
    assert first.exit_code == 0, first.output
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path / "out")}
    assert len(before) == 5 * 7  # six renditions and a manifest per image
    time.sleep(0.05)  # so a rewrite would show in the mtimes
    second = invoke(
        runner, "photos", "loose.jpg", "-o", "out", "--workers", "2", "--report", "rep.json"
    )
    assert second.exit_code == 0, second.output
    report = read_report(tmp_path / "rep.json")
    assert [image["status"] for image in report["images"]] == ["duplicate"] * 5
    assert report["summary"]["duplicate"] == 5 and report["summary"]["done"] == 0
    for image in report["images"]:
        assert len(image["renditions"]) == 6
        assert all(Path(r["path"]).is_file() for r in image["renditions"])
    after = {p: p.stat().st_mtime_ns for p in files_under(tmp_path / "out")}
    assert after == before


def test_formats_and_presets_flags_produce_exactly_those_renditions(
    runner: CliRunner, tmp_path: Path
) -> None:
    """``--formats jpeg,avif`` with a presets file ``{"small": [64, 64]}``: two renditions."""
    source = write_photo(tmp_path / "in" / "a.jpg", (300, 200))
    (tmp_path / "presets.json").write_text(json.dumps({"small": [64, 64]}))
    result = invoke(
        runner,
        "in",
        "-o",
        "out",
        "--workers",
        "1",
        "--formats",
        "jpeg,avif",
        "--presets",
        "presets.json",
        "--report",
        "rep.json",
    )
    assert result.exit_code == 0, result.output
    (image,) = read_report(tmp_path / "rep.json")["images"]
    renditions = sorted(image["renditions"], key=lambda r: r["format"])
    assert [(r["name"], r["format"]) for r in renditions] == [("small", "avif"), ("small", "jpeg")]
    assert all((r["width"], r["height"]) == (64, 43) for r in renditions)
    sha = sha256_of(source)
    folder = tmp_path / "out" / "renditions" / sha[:2] / sha
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "small.avif", "small.jpg"]
    assert format_by_magic((folder / "small.avif").read_bytes()) == "avif"
    assert format_by_magic((folder / "small.jpg").read_bytes()) == "jpeg"


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_a_terminal(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout/stderr; (exit code, what it showed)."""
    controller, terminal = pty.openpty()
    env = clean_env(TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelmill.cli", "run", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=cwd,
        env=env,
    )
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    return code, ANSI_ESCAPE.sub("", shown.decode(errors="replace"))


@pytest.mark.slow
@pytest.mark.parametrize("no_progress", [False, True], ids=["progress", "no-progress"])
def test_progress_bar_shows_on_a_terminal_unless_no_progress(
    tmp_path: Path, no_progress: bool
) -> None:
    """On a terminal the progress bar is drawn; with ``--no-progress`` it never is."""
    for seed in range(6):
        write_photo(tmp_path / "in" / f"{seed}.jpg", (900, 600), seed=seed)
    args = ["in", "-o", "out", "--workers", "2", *(["--no-progress"] if no_progress else [])]
    code, shown = run_on_a_terminal(args, tmp_path)
    assert code == 0, shown
    assert "6 images" in shown  # the summary is printed either way
    bar_drawn = "rendering" in shown and "━" in shown and "6/6" in shown
    assert bar_drawn is not no_progress, shown


# ---- Ctrl-C, for real ------------------------------------------------------------------

BIG_IMAGES = 100  # more than the engine queue holds, so Ctrl-C can land in a blocked submit


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hundred distinct 1200x900 JPEGs: long enough a run to interrupt midway."""
    folder = tmp_path_factory.mktemp("big")
    for seed in range(BIG_IMAGES):
        write_photo(folder / f"{seed:03d}.jpg", (1200, 900), seed=seed)
    return folder


def manifests_under(out: Path) -> list[Path]:
    return list((out / "renditions").glob("*/*/manifest.json"))


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie waiting for its reaper has ended)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def short_temp_dir() -> Iterator[Path]:
    """An empty TMPDIR with a short path. The worker pool's fork server listens on a Unix
    socket under TMPDIR, whose path may not pass 107 bytes: ``tmp_path`` under pytest-xdist
    (/tmp/pytest-of-root/pytest-123/popen-gw0/test_.../tmp) leaves too few for it."""
    with tempfile.TemporaryDirectory(prefix="pixelmill-", dir="/tmp") as name:
        yield Path(name)


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["to-process", "to-process-group"])
def test_ctrl_c_exits_130_cancels_pending_work_and_leaves_nothing_behind(
    tmp_path: Path, big_images: Path, to_group: bool, short_temp_dir: Path
) -> None:
    """SIGINT midway: exit 130 in seconds, no temp files, no workers left, work cut short."""
    out, temp = tmp_path / "out", short_temp_dir
    report = tmp_path / "rep.json"
    command = [sys.executable, "-m", "pixelmill.cli", "run", str(big_images), "-o", str(out)]
    command += ["--workers", "2", "--no-progress", "--report", str(report)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(TMPDIR=str(temp)),
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        deadline = time.monotonic() + 60
        while not manifests_under(out):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no rendition appeared within 60 s"
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2, workers  # the pool is up: the check below means something
        interrupted = time.monotonic()
        if to_group:  # what a terminal's Ctrl-C does
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
        took = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    messages = (stdout + stderr).decode(errors="replace")
    assert proc.returncode == 130, messages
    assert took < 5.0, f"exit took {took:.1f} s after SIGINT"
    assert "Traceback" not in messages
    assert temp_files_under(out) == []
    assert list(temp.rglob("engine-*")) == [], "the engine's run folder was left behind"
    grace = time.monotonic() + 3  # orphans may take a moment to notice their parent is gone
    while any(alive(p) for p in workers) and time.monotonic() < grace:
        time.sleep(0.05)
    assert [p.pid for p in workers if alive(p)] == []
    done = manifests_under(out)
    assert len(done) < BIG_IMAGES
    summary = read_report(report)["summary"]
    assert summary["total"] == BIG_IMAGES
    assert summary["failed"] == 0 and summary["cancelled"] > 0
    assert summary["done"] == len(done)


def test_a_changed_box_under_the_same_name_is_rendered_again(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A preset whose box changed is re-rendered at the new size, not kept as a duplicate."""
    write_photo(tmp_path / "in" / "a.jpg", size=(400, 300))
    presets = tmp_path / "p.json"
    presets.write_text('{"small": [64, 64]}')
    assert invoke(runner, "in", "-o", "out", "--presets", str(presets)).exit_code == 0
    presets.write_text('{"small": [32, 32]}')
    result = invoke(runner, "in", "-o", "out", "--presets", str(presets), "--report", "r.json")
    assert result.exit_code == 0, result.output
    (image,) = read_report(tmp_path / "r.json")["images"]
    assert image["status"] == "done"
    sizes = {(r["width"], r["height"]) for r in image["renditions"]}
    assert sizes == {(32, 24)}
    for rendition in image["renditions"]:
        with Image.open(rendition["path"]) as rendered:
            assert rendered.size == (32, 24)


def test_an_output_folder_inside_the_source_is_not_walked(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`pixelmill run . -o out` twice: renditions are never taken for sources."""
    write_photo(tmp_path / "nest" / "a.jpg")
    assert invoke(runner, "nest", "-o", "nest/out").exit_code == 0
    result = invoke(runner, "nest", "-o", "nest/out", "--report", "r.json")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "r.json")
    assert report["summary"]["total"] == 1
    assert report["images"][0]["status"] == "duplicate"


def test_a_named_pipe_is_skipped_not_waited_on(runner: CliRunner, tmp_path: Path) -> None:
    """Special files in a folder are not read (a FIFO would block forever)."""
    write_photo(tmp_path / "in" / "a.jpg")
    os.mkfifo(tmp_path / "in" / "pipe.jpg")
    result = invoke(runner, "in", "-o", "out", "--report", "r.json")
    assert result.exit_code == 0, result.output
    assert [i["source"] for i in read_report(tmp_path / "r.json")["images"]] == ["in/a.jpg"]


def test_a_named_pipe_given_by_name_fails_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    """A special file named on the command line fails unsupported_format without blocking."""
    os.mkfifo(tmp_path / "pipe.jpg")
    result = invoke(runner, "pipe.jpg", "-o", "out", "--report", "r.json")
    assert result.exit_code == 1, result.output
    (image,) = read_report(tmp_path / "r.json")["images"]
    assert image["error"]["code"] == "unsupported_format"


def test_a_report_path_that_is_a_folder_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    """An unusable --report path is refused before any work, with exit 2."""
    write_photo(tmp_path / "in" / "a.jpg")
    (tmp_path / "somedir").mkdir()
    result = invoke(runner, "in", "-o", "out", "--report", "somedir")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out" / "renditions").exists()


def test_background_and_metadata_settings_reach_the_renditions(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIXELMILL_JPEG_BACKGROUND colours transparency; PIXELMILL_KEEP_METADATA keeps EXIF."""
    source = tmp_path / "in" / "a.png"
    source.parent.mkdir()
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    exif = Image.Exif()
    exif[0x010F] = "pixelmill-test-camera"  # Make
    exif[0x0112] = 1
    image.save(source, exif=exif.tobytes())
    monkeypatch.setenv("PIXELMILL_JPEG_BACKGROUND", "#ff0000")
    monkeypatch.setenv("PIXELMILL_KEEP_METADATA", "true")
    result = invoke(runner, "in", "-o", "out", "--report", "r.json", "--formats", "jpeg")
    assert result.exit_code == 0, result.output
    (report_image,) = read_report(tmp_path / "r.json")["images"]
    with Image.open(report_image["renditions"][0]["path"]) as rendered:
        red, green, blue = rendered.convert("RGB").getpixel((5, 5))  # type: ignore[misc]
        assert red > 240 and green < 15 and blue < 15
        kept = rendered.getexif()
        assert kept.get(0x010F) == "pixelmill-test-camera"
        assert 0x0112 not in kept
