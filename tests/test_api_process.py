"""The service as its own process: SIGKILL and restart, SIGTERM drain, memory during uploads."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from api_helpers import (
    slow_jpeg,
    small_jpeg,
    spool_files,
    temp_files,
    upload,
    wait_for_batch,
)
from api_server import ServerProcess
from pixelmill.store.sqlite import SqliteBatchStore
from webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow
# After a graceful shutdown uvicorn re-raises the signal it caught, so -SIGTERM is clean too.
DRAINED = (0, -signal.SIGTERM)


def server_env(
    data_dir: Path, store: str = "sqlite", prefix: str = "", **extra: str
) -> dict[str, str]:
    env = {
        "PIXELMILL_DATA_DIR": str(data_dir),
        "PIXELMILL_STORE": store,
        "PIXELMILL_WORKERS": "1",
        "PIXELMILL_API_KEY": "",
        "PIXELMILL_WEBHOOK_SECRET": "",
        # Callbacks go to receivers on 127.0.0.1, refused by the address policy otherwise.
        "PIXELMILL_WEBHOOK_ALLOW_PRIVATE": "true",
        **extra,
    }
    if prefix:
        env["PIXELMILL_REDIS_PREFIX"] = prefix
    return env


@pytest.fixture(params=["sqlite", "redis"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings for a server process, on each store."""
    if request.param == "sqlite":
        yield server_env(tmp_path / "data")
        return
    url = request.getfixturevalue("redis_server_url")
    prefix = request.getfixturevalue("redis_prefix")
    yield server_env(tmp_path / "data", store=url, prefix=prefix)


def wait_for(predicate: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_batch_survives_sigkill_and_finishes_after_a_restart(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = Path(store_env["PIXELMILL_DATA_DIR"])
    first = ServerProcess(store_env, tmp_path / "server.log").start()
    try:
        files = [upload(f"{i}.jpg", slow_jpeg(1000 + i)) for i in range(8)]
        files.append(upload("note.jpg", b"not an image at all"))
        created = httpx.post(f"{first.url}/v1/batches", files=files, timeout=30)
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch_id"]

        def one_done() -> bool:
            status = httpx.get(f"{first.url}/v1/batches/{batch_id}").json()
            return bool(status["completed"] >= 1)

        wait_for(one_done)
    finally:
        first.kill()
    left = spool_files(data_dir)
    assert left, "the kill came too late to leave work behind"
    lost = left[0]  # an upload lost with the machine: that image must fail, not hang
    lost.unlink()

    second = ServerProcess(store_env, tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            status = wait_for_batch(client, batch_id, timeout_s=60)
    finally:
        assert second.terminate() in DRAINED, second.log()
    assert status["status"] == "completed" and status["pending"] == 0
    images = {image["image_id"]: image for image in status["images"]}
    lost_image = images[lost.name]
    if lost_image["status"] == "failed":  # else it had finished just before the kill
        assert lost_image["error"]["code"] == "internal"
        assert "spool" in lost_image["error"]["message"]
    others = [i for i in status["images"][:8] if i["image_id"] != lost.name]
    assert {i["status"] for i in others} <= {"done", "duplicate"}
    assert status["images"][8]["error"]["code"] == "unsupported_format"
    assert spool_files(data_dir) == []
    assert temp_files(data_dir) == []


def test_sigterm_drains_and_leaves_unstarted_images_for_the_next_start(tmp_path: Path) -> None:
    env = server_env(tmp_path / "data")
    data_dir = tmp_path / "data"
    first = ServerProcess(env, tmp_path / "server.log").start()
    files = [upload(f"{i}.jpg", slow_jpeg(2000 + i)) for i in range(6)]
    batch_id = httpx.post(f"{first.url}/v1/batches", files=files, timeout=30).json()["batch_id"]
    wait_for(lambda: httpx.get(f"{first.url}/v1/batches/{batch_id}").json()["completed"] >= 1)
    assert first.terminate() in DRAINED, first.log()  # uvicorn's shutdown runs the lifespan exit

    # Drained, not dropped: what was rendering at SIGTERM finished in the first process, and
    # nothing is left half-way ("processing") for the next start to redo.
    store = SqliteBatchStore(data_dir / "pixelmill.db")
    try:
        after = store.get_batch(batch_id)
    finally:
        store.close()
    assert after is not None
    statuses = [image.status.value for image in after.images]
    assert "processing" not in statuses, statuses
    assert set(statuses) <= {"done", "pending"}, statuses
    assert statuses.count("done") >= 1

    second = ServerProcess(env, tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            during = client.get(f"/v1/batches/{batch_id}").json()
            assert during["cancelled"] == 0 and during["failed"] == 0  # nothing was dropped
            status = wait_for_batch(client, batch_id)
    finally:
        second.terminate()
    assert status["status"] == "completed" and status["completed"] == 6
    assert spool_files(data_dir) == []


def test_a_100_mib_upload_does_not_grow_the_server_by_100_mib(tmp_path: Path) -> None:
    """Uploads stream to the spool: server memory stays far below the file's size."""
    size = 100 * 1024 * 1024 - 4096
    server = ServerProcess(server_env(tmp_path / "data"), tmp_path / "server.log").start()
    try:
        process = psutil.Process(server.pid)
        # Warm up first: the first upload imports and builds things once, whatever its size.
        warm_up = httpx.post(f"{server.url}/v1/batches", files=[upload("w.jpg", small_jpeg(1))])
        assert warm_up.status_code == 202
        baseline = process.memory_info().rss
        peak = baseline
        sampling = True

        def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()

        def body() -> Iterator[bytes]:
            # A real JPEG with ~100 MiB of trailing bytes: renders quickly, uploads slowly.
            image = small_jpeg(3000)
            yield b'--memtest\r\nContent-Disposition: form-data; name="files"; '
            yield b'filename="huge.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + image
            block = b"\0" * (1024 * 1024)
            sent = len(image)
            while sent + len(block) <= size:
                yield block
                sent += len(block)
            yield b"\0" * (size - sent) + b"\r\n--memtest--\r\n"

        try:
            response = httpx.post(
                f"{server.url}/v1/batches",
                content=body(),
                headers={"Content-Type": "multipart/form-data; boundary=memtest"},
                timeout=60,
            )
        finally:
            sampling = False
            sampler.join()
        assert response.status_code == 202, response.text
        with httpx.Client(base_url=server.url, timeout=30) as client:
            status = wait_for_batch(client, response.json()["batch_id"])
        assert status["images"][0]["status"] == "done"
        assert spool_files(tmp_path / "data") == []
        grown = peak - baseline
        print(f"server RSS grew by {grown / 2**20:.1f} MiB during a 100 MiB upload")
        assert grown < 40 * 1024 * 1024, f"RSS grew by {grown >> 20} MiB"
    finally:
        server.terminate()


def test_a_callback_owed_when_the_service_dies_is_sent_after_the_restart(tmp_path: Path) -> None:
    """A webhook still being retried at SIGKILL is delivered by the next start."""
    env = server_env(
        tmp_path / "data",
        PIXELMILL_WEBHOOK_SECRET="s3cret",
        PIXELMILL_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver listens on 127.0.0.1
    )
    with webhook_receiver() as receiver:
        receiver.answers = [503] * 1000  # the receiver is down for the first service
        first = ServerProcess(env, tmp_path / "server.log").start()
        try:
            files = [upload("a.jpg", small_jpeg(123))]
            created = httpx.post(
                f"{first.url}/v1/batches", files=files, data={"callback_url": receiver.url}
            )
            batch_id = created.json()["batch_id"]
            receiver.wait_for(1)  # the first attempt failed: a retry is pending
        finally:
            first.kill()
        assert (tmp_path / "data" / "callbacks" / batch_id).exists()
        with receiver.lock:
            attempts_before = len(receiver.calls)
            receiver.answers = []  # back up: 200 from now on
        second = ServerProcess(env, tmp_path / "server.log").start()
        try:
            calls = receiver.wait_for(attempts_before + 1)
        finally:
            assert second.terminate() in DRAINED, second.log()
    body = calls[-1].body
    assert json.loads(body)["batch_id"] == batch_id
    assert json.loads(body)["status"] == "completed"
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert calls[-1].headers["x-pixelmill-signature"] == f"sha256={expected}"
    assert not (tmp_path / "data" / "callbacks" / batch_id).exists(), "delivered, still owed"
