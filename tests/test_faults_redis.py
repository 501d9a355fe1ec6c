"""Redis goes away mid-batch, for real: a throwaway redis-server shut down and started again."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api_helpers import check_invariant, small_jpeg, spool_files, upload, wait_for_empty_spool
from api_server import ServerProcess, app_client, free_port
from conftest import IN_CI
from pixelmill.config import Settings
from test_api_process import DRAINED, server_env

pytestmark = pytest.mark.slow

IMAGES = 20
OUTAGE_S = 4.0


@dataclass
class ThrowawayRedis:
    """A redis-server with append-only persistence in its own folder, on a fixed port."""

    binary: str
    folder: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
                "--save", ""]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                pass
            assert self.proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def shut_down(self) -> None:
        """A real shutdown (SIGTERM: Redis syncs its append-only file and exits)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("no redis-server binary and CI=true requires this test")
        pytest.skip("no redis-server binary")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = ThrowawayRedis(binary, folder, free_port())
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def poll(client: httpx.Client, batch_id: str, seen: list[int]) -> dict[str, Any] | None:
    """One status poll: never a 500; when answered, the counts add up and never go back."""
    response = client.get(f"/v1/batches/{batch_id}")
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "unavailable", response.text
        assert response.headers["retry-after"].isdigit()
        return None
    status: dict[str, Any] = response.json()
    check_invariant(status)
    done = status["completed"] + status["failed"] + status["cancelled"]
    assert not seen or done >= seen[-1], f"finished count went back: {seen[-1]} -> {done}"
    seen.append(done)
    return status


def test_redis_shut_down_mid_batch_loses_nothing_and_the_batch_finishes(
    throwaway_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, store=throwaway_redis.url, workers=1)
    with app_client(settings) as client:
        files = [upload(f"{i}.jpg", small_jpeg(9800 + i, (1400, 1000))) for i in range(IMAGES)]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while (status := poll(client, batch_id, seen)) is None or status["completed"] < 2:
            assert time.monotonic() < deadline, "the batch did not start"
            time.sleep(0.05)

        throwaway_redis.shut_down()
        outage_end = time.monotonic() + OUTAGE_S
        answers: list[int] = []
        while time.monotonic() < outage_end:
            answers.append(client.get("/healthz").status_code)
            poll(client, batch_id, seen)
            time.sleep(0.1)
        assert 503 in answers and set(answers) <= {200, 503}, answers
        throwaway_redis.start()

        deadline = time.monotonic() + 180
        while (status := poll(client, batch_id, seen)) is None or status["pending"]:
            assert time.monotonic() < deadline, f"batch not finished after the outage: {status}"
            time.sleep(0.1)
        assert status["status"] == "completed"
        assert status["completed"] == IMAGES and status["failed"] == status["cancelled"] == 0
        assert {image["status"] for image in status["images"]} == {"done"}
        health_deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < health_deadline, client.get("/healthz").text
            time.sleep(0.1)
    wait_for_empty_spool(data_dir)


def test_outcomes_unwritten_at_a_stop_are_redone_by_the_next_start(
    throwaway_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """Redis down, then the service stopped: outcomes it could not write are not lost; their
    spool files stay and the next start resumes those images (rendered again or duplicate)."""
    env = server_env(tmp_path / "data", store=throwaway_redis.url, prefix="pixelmill-fault:")
    first = ServerProcess(env, tmp_path / "server.log").start()
    files = [upload(f"{i}.jpg", small_jpeg(9900 + i, (1400, 1000))) for i in range(6)]
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
            seen: list[int] = []
            deadline = time.monotonic() + 60
            while (status := poll(client, batch_id, seen)) is None or status["completed"] < 1:
                assert time.monotonic() < deadline, "the batch did not start"
                time.sleep(0.05)
            throwaway_redis.shut_down()
            deadline = time.monotonic() + 60
            while "wait for the store" not in client.get("/healthz").text:
                assert time.monotonic() < deadline, "no outcome waited for the store"
                time.sleep(0.1)
    finally:
        assert first.terminate() in DRAINED, first.log()
    assert spool_files(tmp_path / "data"), "unwritten outcomes keep their spool files"
    throwaway_redis.start()
    second = ServerProcess(env, tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            seen = []
            deadline = time.monotonic() + 120
            while (status := poll(client, batch_id, seen)) is None or status["pending"]:
                assert time.monotonic() < deadline, f"not finished after the restart: {status}"
                time.sleep(0.1)
            assert status["status"] == "completed" and status["completed"] == 6
            assert status["failed"] == status["cancelled"] == 0
    finally:
        assert second.terminate() in DRAINED, second.log()
    wait_for_empty_spool(tmp_path / "data")
