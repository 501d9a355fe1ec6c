"""What ``pixelmill serve`` and ``pixelmill worker`` say when they cannot work, as real
processes: a part that does not answer (storage, store, broker) is one line naming it
(password masked) and exit 3, a refused login is exit 2, and neither takes any work; a
process count out of range is one line and exit 2; the help shows its defaults.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_server import ServerProcess, free_port
from celery_helpers import AMQP_URL, REDIS_URL, celery_env, cleanup_celery, require_broker

WORKER_READY = "pixelmill worker ready"
START_CHECK_TIMEOUT_S = 30  # the checks are bounded at a few seconds each


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released, by us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def pixelmill(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelmill", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=START_CHECK_TIMEOUT_S,
    )


def start(command: str) -> list[str]:
    """The command line of ``command``: ``serve`` on a free port (it must not get that far)."""
    return [command, "--port", str(free_port())] if command == "serve" else [command]


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *wanted: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done
    assert len(lines) == 1, done.stderr
    for text in wanted:
        assert text in lines[0], done.stderr
    assert WORKER_READY not in done.stderr and "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Celery settings of a test of its own, on a Redis broker and store that answer."""
    settings = celery_env("redis", tmp_path)
    yield settings
    cleanup_celery(settings)


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_store_that_does_not_answer_stops_the_start(env: dict[str, str], command: str) -> None:
    store = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    done = pixelmill(*start(command), env={**env, "PIXELMILL_STORE": store})
    line = assert_one_line(done, 3, "the store redis://:***@127.0.0.1:", "does not answer")
    assert "s3cret" not in line


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_storage_that_does_not_answer_stops_the_start_alike(
    env: dict[str, str], command: str
) -> None:
    """The same exit code and shape from both commands (the worker said exit 2 before)."""
    pytest.importorskip("boto3")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    storage_env = {
        "PIXELMILL_STORAGE": "s3://pixelmill-test/prefix",
        "PIXELMILL_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "pixelmill-test",
        "AWS_SECRET_ACCESS_KEY": "pixelmill-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    done = pixelmill(*start(command), env={**env, **storage_env})
    assert_one_line(done, 3, "error: storage s3://pixelmill-test/prefix at " + endpoint)


def test_serve_stops_when_the_broker_does_not_answer(env: dict[str, str]) -> None:
    broker = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    done = pixelmill(
        "serve", "--port", str(free_port()), env={**env, "PIXELMILL_BROKER_URL": broker}
    )
    line = assert_one_line(done, 3, "the broker redis://:***@127.0.0.1:", "does not answer")
    assert "s3cret" not in line


def test_serve_stops_when_the_broker_refuses_its_login(tmp_path: Path) -> None:
    settings = celery_env("amqp", tmp_path)  # skips (fails under CI) without RabbitMQ
    broker = "amqp://guest:wrong@127.0.0.1:5672//"
    done = pixelmill(
        "serve", "--port", str(free_port()), env={**settings, "PIXELMILL_BROKER_URL": broker}
    )
    line = assert_one_line(done, 2, "the broker amqp://guest:***@127.0.0.1:5672//", "refuses")
    assert "wrong" not in line


def test_serve_names_the_engine_and_the_masked_broker_once_started(tmp_path: Path) -> None:
    require_broker("amqp")
    settings = celery_env("amqp", tmp_path)
    process = ServerProcess(settings, tmp_path / "serve.log")
    try:
        process.start()
        assert httpx.get(f"{process.url}/healthz", timeout=10).json()["storage"] == "ok"
        process.terminate()
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()
        cleanup_celery(settings)
    started = [line for line in process.log().splitlines() if "celery engine: broker" in line]
    assert len(started) == 1, process.log()
    assert "amqp://guest:***@127.0.0.1:5672//" in started[0], started
    assert f"queue {settings['PIXELMILL_CELERY_QUEUE']}" in started[0]
    assert AMQP_URL not in process.log()


@pytest.mark.parametrize("command", [["worker"], ["run"]])
def test_the_help_shows_the_default_process_count(command: list[str]) -> None:
    done = pixelmill(*command, "--help", env={})
    assert done.returncode == 0, done
    assert "1-256 [default: CPU count]." in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["run", "x", "-o", "out", "--workers", "300"], "--workers"),
    ],
)
def test_a_process_count_out_of_range_is_one_line(
    tmp_path: Path, args: list[str], option: str
) -> None:
    done = pixelmill(*args, env={"PIXELMILL_DATA_DIR": str(tmp_path), "PIXELMILL_STORE": REDIS_URL})
    assert_one_line(done, 2, f"error: {option} must be 1-256, not ")
