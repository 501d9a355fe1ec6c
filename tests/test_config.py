"""Bad settings and presets files stop ``pixelmill serve`` and ``run`` with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api_server import free_port
from pixelmill.config import ConfigError, load_presets

PIXELMILL = [sys.executable, "-m", "pixelmill"]
START_TIMEOUT_S = 60


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess, with only the given PIXELMILL_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMILL_")}
    clean["PIXELMILL_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [*PIXELMILL, *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "pydantic" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_SETTINGS = [
    ("PIXELMILL_WORKERS", "abc", "valid integer"),
    ("PIXELMILL_WORKERS", "0", "greater than or equal to 1"),
    ("PIXELMILL_STORE", "mysql://x", "redis://"),
    ("PIXELMILL_KEEP_METADATA", "perhaps", "boolean"),
    ("PIXELMILL_JPEG_BACKGROUND", "#zzzzzz", "#rrggbb"),
    ("PIXELMILL_FORMATS", "gif", "choose from"),
    ("PIXELMILL_MAX_PIXELS", "999999999999", "less than or equal to"),
    ("PIXELMILL_WEBHOOK_ALLOW_PRIVATE", "sometimes", "boolean"),
    ("PIXELMILL_MAX_FILES_PER_BATCH", "-5", "greater than or equal to 1"),
    ("PIXELMILL_CLIENT_TIMEOUT_S", "soon", "valid number"),
    ("PIXELMILL_ENGINE", "threads", "'local' or 'celery'"),
    ("PIXELMILL_BROKER_URL", "kafka://x", "redis:// or amqp://"),
    ("PIXELMILL_STORAGE", "ftp://x", "file://<folder> or s3://"),
    ("PIXELMILL_STORAGE", "s3://A_b", "valid bucket name"),
    ("PIXELMILL_CELERY_QUEUE", "a queue", "letters, digits"),
    ("PIXELMILL_VISIBILITY_TIMEOUT_S", "0", "greater than 0"),
]


@pytest.mark.parametrize(("variable", "value", "accepts"), BAD_SETTINGS)
@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_2(
    tmp_path: Path, command: str, variable: str, value: str, accepts: str
) -> None:
    args = ["serve", "--port", "1"] if command == "serve" else ["run", ".", "-o", "out"]
    result = run_cli(args, tmp_path, **{variable: value})
    assert_one_line_usage_error(result, f"{variable}={value!r}", accepts)
    assert not (tmp_path / "out").exists()


PRESET_FILES = [
    ({"thumb": 200}, "entry 'thumb'", "[width, height]"),
    ({"thumb": [200]}, "entry 'thumb'", "got [200]"),
    ({"thumb": [200, -1]}, "entry 'thumb'", "from 1 to 65535"),
    ({"thumb": [200, 1.5]}, "entry 'thumb'", "whole numbers"),
    ({"thumb": [True, 10]}, "entry 'thumb'", "[width, height]"),
    ({"thumb": "200x200"}, "entry 'thumb'", "[width, height]"),
    ({"bad name": [10, 10]}, "entry 'bad name'", "letters, digits and _"),
    ({"9lives": [10, 10]}, "entry '9lives'", "not starting with a digit"),
    ({}, "defines no presets", ""),
    ([[10, 10]], "JSON object", ""),
]


@pytest.mark.parametrize(("content", "names", "accepts"), PRESET_FILES)
def test_a_bad_presets_file_names_the_file_and_the_entry(
    tmp_path: Path, content: object, names: str, accepts: str
) -> None:
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as raised:
        load_presets(path)
    assert str(path) in str(raised.value) and names in str(raised.value)
    assert accepts in str(raised.value)


@pytest.mark.parametrize("command", ["serve", "run", "run-flag"])
def test_a_bad_presets_file_stops_the_commands_with_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "p.json").write_text('{"thumb": 200}')
    if command == "serve":
        result = run_cli(["serve", "--port", "1"], tmp_path, PIXELMILL_PRESETS_FILE="p.json")
    elif command == "run":
        result = run_cli(["run", ".", "-o", "out"], tmp_path, PIXELMILL_PRESETS_FILE="p.json")
    else:
        result = run_cli(["run", ".", "-o", "out", "--presets", "p.json"], tmp_path)
    assert_one_line_usage_error(result, "p.json", "entry 'thumb'", "[width, height]")


def test_unreadable_and_invalid_json_presets_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"thumb": [1, 2]')
    missing = run_cli(["serve", "--port", "1"], tmp_path, PIXELMILL_PRESETS_FILE="nope.json")
    assert_one_line_usage_error(missing, "nope.json", "No such file")
    broken = run_cli(["serve", "--port", "1"], tmp_path, PIXELMILL_PRESETS_FILE="broken.json")
    assert_one_line_usage_error(broken, "broken.json", "not valid JSON")


def test_a_preset_given_twice_is_refused_not_silently_the_last(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    path.write_text('{"thumb": [100, 100], "large": [800, 800], "thumb": [200, 200]}')
    with pytest.raises(ConfigError) as raised:
        load_presets(path)
    assert str(raised.value) == f"presets file {path}, entry 'thumb': given more than once"


def test_a_good_presets_file_is_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"square": [300, 300], "banner_2x": [2000, 100]}')
    presets = load_presets(path)
    assert [(p.name, p.width, p.height) for p in presets] == [
        ("square", 300, 300),
        ("banner_2x", 2000, 100),
    ]


DEPLOYMENTS = [
    ({"PIXELMILL_ENGINE": "celery"}, "needs PIXELMILL_BROKER_URL"),
    (
        {"PIXELMILL_ENGINE": "celery", "PIXELMILL_BROKER_URL": "redis://127.0.0.1:6379/1"},
        "needs PIXELMILL_STORE=redis://",
    ),
    ({"PIXELMILL_STORAGE_PUBLIC_URL": "cdn.example.com"}, "http(s)://"),
]


@pytest.mark.parametrize(("env", "needle"), DEPLOYMENTS)
def test_settings_that_cannot_work_together_stop_serve_with_one_line(
    tmp_path: Path, env: dict[str, str], needle: str
) -> None:
    result = run_cli(["serve", "--port", "1"], tmp_path, **env)
    assert_one_line_usage_error(result, needle)


def test_run_renders_locally_whatever_the_engine_settings(tmp_path: Path) -> None:
    """``pixelmill run`` never needs a broker: the distributed settings do not apply to it."""
    (tmp_path / "in").mkdir()
    result = run_cli(
        ["run", "in", "-o", "out", "--no-progress"], tmp_path, PIXELMILL_ENGINE="celery"
    )
    assert result.returncode == 0, result.stderr


def test_a_visibility_timeout_shorter_than_a_render_stops_serve_and_worker(
    tmp_path: Path,
) -> None:
    """A message redelivered while its render still runs would be rendered again: refused."""
    env = {
        "PIXELMILL_ENGINE": "celery",
        "PIXELMILL_BROKER_URL": "redis://127.0.0.1:6379/1",
        "PIXELMILL_STORE": "redis://127.0.0.1:6379/1",
        "PIXELMILL_IMAGE_TIMEOUT_S": "30",
        "PIXELMILL_VISIBILITY_TIMEOUT_S": "39",
    }
    for command in (["serve", "--port", "1"], ["worker"]):
        result = run_cli(command, tmp_path, **env)
        assert_one_line_usage_error(result, "PIXELMILL_VISIBILITY_TIMEOUT_S=39 must be at least")
    from pixelmill.config import Settings

    values = {k.removeprefix("PIXELMILL_").lower(): v for k, v in env.items()}
    Settings.model_validate({**values, "visibility_timeout_s": "40"}).check_deployment()


WITHOUT_EXTRAS = (
    "import sys\n"
    "for name in ('celery', 'kombu', 'boto3', 'botocore'):\n"
    "    sys.modules[name] = None  # importing them now raises ImportError\n"
    "from pixelmill.cli import main\n"
    "sys.argv = ['pixelmill', *sys.argv[1:]]\n"
    "main()\n"
)


def test_the_local_engine_serves_without_the_celery_and_s3_extras(tmp_path: Path) -> None:
    """``make serve`` installs the package without extras: nothing on the local path may
    import Celery or boto3. The service starts, answers, and renders nothing it cannot."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMILL_")}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_EXTRAS, "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**clean, "PIXELMILL_DATA_DIR": str(tmp_path / "data"), "PIXELMILL_WORKERS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert answer.json()["engine_kind"] == "local"
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_celery_engine_without_its_extra_is_one_line(tmp_path: Path, command: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMILL_")}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, command, *(["--port", "1"] * (command == "serve"))],
        cwd=tmp_path,
        env={
            **clean,
            "PIXELMILL_DATA_DIR": str(tmp_path / "data"),
            "PIXELMILL_ENGINE": "celery",
            "PIXELMILL_BROKER_URL": "redis://127.0.0.1:6379/1",
            "PIXELMILL_STORE": "redis://127.0.0.1:6379/0",
        },
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    assert_one_line_usage_error(result, "needs the celery extra", "pixelmill[celery]")
