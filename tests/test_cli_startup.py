"""``pixelmill run`` starts light: what it imports, the command lines it parses without
Typer (as Typer would), the settings it reads without pydantic-settings, and a fork server
that starts whatever the length of ``TMPDIR``."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

import pixelmill.cli
from pixelmill.config import ConfigError, Settings
from pixelmill.engine.forkserver import MAX_TEMP_DIR_BYTES, SOCKET_PATH_LIMIT, socket_folder_roots
from pixelmill.render_settings import RenderSettings, load_render_settings
from pixelmill.run_args import parse_run_args
from pixelmill.run_command import run_images

# Modules a local run has no use for; each costs tens of milliseconds on every run. (pydantic
# itself stays: typer coerces every option through a pydantic TypeAdapter, and pydantic's
# plugin loader imports importlib.metadata.)
NOT_FOR_RUN = (
    "pydantic_settings",
    "pixelmill.config",
    "fastapi",
    "starlette",
    "uvicorn",
    "redis",
    "celery",
    "kombu",
    "boto3",
    "botocore",
    "httpx",
    "rich.progress",  # no bar is shown off a terminal or with --no-progress
    "pixelmill.api",
)

# Runs `pixelmill run` in this process, then lists which of the modules it loaded.
_RUN_AND_LIST = """
import json, sys
import pixelmill.cli
try:
    pixelmill.cli.app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in json.loads({names!r}) if m in sys.modules)))
"""


# The same, through the console script's entry point: a plain command line skips Typer.
_MAIN_AND_LIST = """
import json, sys
from pixelmill.__main__ import main
sys.argv = ["pixelmill", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in json.loads({names!r}) if m in sys.modules)))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIXELMILL_")}
    env.update(extra)
    return env


def _photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "a.jpg"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(path, "JPEG")
    return path


def _modules_loaded_by(code: str, *args: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_a_run_imports_no_settings_model_no_service_and_no_progress_bar(tmp_path: Path) -> None:
    """A whole run in one process (pool, workers, report) loads none of NOT_FOR_RUN."""
    source = _photo(tmp_path / "photos")
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = _RUN_AND_LIST.format(names=json.dumps(NOT_FOR_RUN))
    args = ["run", str(source), "-o", str(out), "--workers", "1", "--report", str(report)]
    loaded = _modules_loaded_by(code, *args, env=_env())
    assert json.loads(report.read_text())["summary"]["done"] == 1  # it did run
    assert loaded == []


def test_a_plain_run_command_line_imports_neither_typer_nor_pydantic(tmp_path: Path) -> None:
    source = _photo(tmp_path / "photos")
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = _MAIN_AND_LIST.format(names=json.dumps([*NOT_FOR_RUN, "typer", "pydantic"]))
    args = ["run", str(source), "-o", str(out), "--workers", "1", "--report", str(report)]
    loaded = _modules_loaded_by(code, *args, env=_env())
    assert json.loads(report.read_text())["summary"]["done"] == 1
    assert loaded == []


# Command lines the quick parse takes: it must read them exactly as Typer does.
PLAIN_COMMAND_LINES = [
    ["a.jpg", "-o", "out"],
    ["-o", "out", "a", "b"],
    ["a", "--out=out", "--workers", "3", "--no-progress"],
    ["my photos/ä.jpg", "--out", "out dir", "--workers=12"],
    ["a", "-o", "o", "--report", "r.json", "--presets", "p.json", "--formats", "jpeg,avif"],
    ["a", "-o", "o", "--quality", "jpeg=80,webp=70", "--layout", "mirror", "b"],
    ["a", "-o", "o", "--layout=content", "--report=x/r.json"],
]
# Command lines it leaves to Typer (help, errors, forms it does not read).
OTHER_COMMAND_LINES = [
    [],
    ["--help"],
    ["a"],
    ["-o", "out"],
    ["a", "-o"],
    ["a", "-o", ""],
    ["a", "-o", "-x"],
    ["a", "-oout"],
    ["a", "-o=out"],
    ["a", "-o", "o", "-o", "p"],
    ["a", "-o", "o", "--workers", "0"],
    ["a", "-o", "o", "--workers", "+3"],
    ["a", "-o", "o", "--workers", "x"],
    ["a", "-o", "o", "--layout", "Mirror"],
    ["a", "-o", "o", "--no-progress=1"],
    ["a", "-o", "o", "--bogus"],
    ["--", "-a", "-o", "o"],
    ["-", "-o", "o"],
]


def _as_typer_reads(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The arguments Typer's ``run`` hands to ``run_images`` for ``pixelmill run ARGS``."""
    seen: list[inspect.BoundArguments] = []

    def capture(*given: Any, **named: Any) -> int:
        seen.append(inspect.signature(run_images).bind(*given, **named))
        return 0

    monkeypatch.setattr(pixelmill.cli, "run_images", capture)
    result = CliRunner().invoke(pixelmill.cli.app, ["run", *args])
    assert result.exit_code == 0 and len(seen) == 1, result.output
    seen[0].apply_defaults()
    return dict(seen[0].arguments)


@pytest.mark.parametrize("args", PLAIN_COMMAND_LINES, ids=" ".join)
def test_a_plain_command_line_is_read_as_typer_reads_it(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = parse_run_args(args)
    assert parsed is not None
    bound = inspect.signature(run_images).bind(**parsed)
    bound.apply_defaults()
    assert dict(bound.arguments) == _as_typer_reads(args, monkeypatch)


@pytest.mark.parametrize("args", OTHER_COMMAND_LINES, ids=" ".join)
def test_any_other_command_line_goes_to_typer(args: list[str]) -> None:
    assert parse_run_args(args) is None


def test_both_paths_answer_a_usage_error_alike(tmp_path: Path) -> None:
    """The console script's quick path and Typer's: same line, same exit code."""
    answers = []
    for module in ("pixelmill", "pixelmill.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "run", "missing.jpg", "-o", "out"],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        answers.append((done.returncode, done.stdout, done.stderr))
    assert answers[0] == answers[1] == (2, "", "error: no such file or folder: missing.jpg\n")


def test_both_paths_say_the_version_alike() -> None:
    answers = [
        subprocess.run(
            [sys.executable, "-m", module, "--version"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for module in ("pixelmill", "pixelmill.cli")
    ]
    assert [(a.returncode, a.stdout, a.stderr) for a in answers] == 2 * [(0, answers[1].stdout, "")]
    assert answers[0].stdout.startswith("pixelmill ")


def test_the_fork_server_preloads_the_worker_without_the_settings_model() -> None:
    """What every worker inherits: the codecs, not pydantic."""
    code = (
        "import json, sys\n"
        "import pixelmill.engine.worker_preload\n"
        "from PIL import Image\n"
        "heavy = [m for m in ('pydantic', 'pydantic_settings', 'typer', 'rich') "
        "if m in sys.modules]\n"
        "print(json.dumps(heavy + ([] if Image._initialized == 2 else ['no Image.init'])))"
    )
    assert _modules_loaded_by(code, env=_env()) == []


def test_render_settings_default_to_the_settings_models_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One source of defaults: with nothing set, the light path and the model agree."""
    for name in list(os.environ):
        if name.upper().startswith("PIXELMILL_"):
            monkeypatch.delenv(name)
    assert load_render_settings() == RenderSettings() == Settings().render_settings()
    assert RenderSettings().render_spec() == Settings().render_spec()


@pytest.mark.parametrize("name", ["PIXELMILL_WORKERS", "pixelmill_workers"])
def test_any_setting_in_the_environment_is_read_and_checked_by_the_model(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """pydantic-settings matches names whatever their case; a bad value is one line."""
    monkeypatch.setenv(name, "3")
    assert load_render_settings().workers == 3
    monkeypatch.setenv(name, "abc")
    with pytest.raises(ConfigError, match="PIXELMILL_WORKERS"):
        load_render_settings()


def test_an_unrelated_bad_setting_still_stops_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """As before: ``run`` checks every PIXELMILL_* variable, not only those it reads."""
    monkeypatch.setenv("PIXELMILL_STORE", "postgres://nope")
    with pytest.raises(ConfigError, match="PIXELMILL_STORE"):
        load_render_settings()


def test_the_socket_folder_moves_to_tmp_only_when_the_path_would_be_too_long() -> None:
    """Then /var/tmp and /dev/shm, should /tmp not take it (test_cli_socket_folder.py)."""
    assert socket_folder_roots("/tmp") == ("/tmp", "/var/tmp", "/dev/shm")
    fits = "/" + "x" * 70  # 71 + 32 bytes
    assert socket_folder_roots(fits) == (fits, "/tmp", "/var/tmp", "/dev/shm")
    assert socket_folder_roots("/" + "x" * 80) == ("/tmp", "/var/tmp", "/dev/shm")
    assert socket_folder_roots(None) == ("/tmp", "/var/tmp", "/dev/shm")
    assert MAX_TEMP_DIR_BYTES == 75
    assert len("/var/tmp") + len("/pymp-XXXXXXXX/listener-XXXXXXXX") <= SOCKET_PATH_LIMIT


def test_a_run_under_a_long_tmpdir_renders_and_leaves_nothing(tmp_path: Path) -> None:
    """The fork server's socket would pass the 107-byte limit under this TMPDIR: every
    worker failed to start. Its folder goes to /tmp instead and is removed at exit."""
    long_tmp = Path(tempfile.mkdtemp(prefix="pixelmill-" + "t" * 90))
    try:
        assert len(str(long_tmp)) > 100
        source = _photo(tmp_path / "photos")
        out, report = tmp_path / "out", tmp_path / "report.json"
        options = ["-o", str(out), "--workers", "2", "--no-progress", "--report", str(report)]
        done = subprocess.run(
            [sys.executable, "-m", "pixelmill", "run", str(source), *options],
            env=_env(TMPDIR=str(long_tmp)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(report.read_text())["summary"]["done"] == 1
        assert list(long_tmp.iterdir()) == []
    finally:
        os.rmdir(long_tmp)


def test_the_fork_server_is_a_fork_of_the_command_and_ends_with_it(tmp_path: Path) -> None:
    """No second interpreter to start: the server runs the command's own program (so it
    shows the same command line), its workers are its children, and every one of them
    is gone once the run has exited."""
    psutil = pytest.importorskip("psutil")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        Image.new("RGB", (1600, 1200), (i * 30, 90, 160)).save(photos / f"{i}.jpg", "JPEG")
    command = [sys.executable, "-m", "pixelmill", "run", str(photos), "-o", str(tmp_path / "o")]
    proc = subprocess.Popen([*command, "--workers", "2"], env=_env(), stderr=subprocess.PIPE)
    seen: dict[int, Any] = {}
    try:
        main = psutil.Process(proc.pid)
        while proc.poll() is None and not any(p.children() for p in main.children()):
            for child in main.children(recursive=True):
                seen[child.pid] = child
        servers = [p for p in main.children() if p.children()]
        assert servers, "no fork server with workers seen"
        assert servers[0].cmdline() == main.cmdline()
        seen.update((p.pid, p) for p in servers[0].children())
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    _, alive = psutil.wait_procs(list(seen.values()), timeout=5)
    assert alive == []
