"""Shared fixtures: the corpus, a real Redis, generated images."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from browser import chromium  # noqa: F401  (a Chromium for each browser test module)
from s3_server import s3_server  # noqa: F401  (the SeaweedFS fixture, for every test)

IN_CI = os.environ.get("CI", "").lower() == "true"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
REDIS_URL = os.environ.get("PIXELMILL_TEST_REDIS", "redis://127.0.0.1:6379/0")


def corpus_or_skip() -> Path:
    """The corpus folder; a skip outside the project set-up, a failure under CI=true."""
    if (CORPUS / "manifest.csv").is_file():
        return CORPUS
    reason = f"image corpus not found at {CORPUS} (it lives in ../shared/corpus)"
    if IN_CI:
        pytest.fail(reason + " and CI=true requires it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus() -> Path:
    return corpus_or_skip()


@pytest.fixture(scope="session")
def corpus_rows(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _redis_alive(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A reachable Redis: the machine's, else a throwaway redis-server on a free port."""
    if _redis_alive(REDIS_URL):
        yield REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("no Redis at 127.0.0.1:6379 and no redis-server binary (CI=true)")
        pytest.skip("no Redis available")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _redis_alive(url):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("throwaway redis-server did not start")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A unique key prefix for one test; every key under it is deleted afterwards."""
    import redis

    prefix = f"pixelmill-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted on ``folder`` (made here), a disk that fills up for
    real; unmounted afterwards whatever happens. Needs root: a skip with the reason
    elsewhere, a failure under CI=true."""
    folder.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        result = subprocess.CompletedProcess(command, 1, "", str(exc))
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {result.stderr.strip()}"
        if IN_CI:
            pytest.fail(reason + " and CI=true requires the full-disk tests")
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CliRunner whose working directory is ``tmp_path``, with no PIXELMILL_* settings."""
    for name in list(os.environ):
        if name.startswith("PIXELMILL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return CliRunner()
