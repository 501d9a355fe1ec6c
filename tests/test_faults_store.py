"""A full disk under the SQLite store, for real: a tmpfs this test mounts, filled to the brim."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_helpers import (
    check_invariant,
    slow_jpeg,
    small_jpeg,
    upload,
    wait_for_batch,
    wait_for_empty_spool,
)
from api_server import app_client
from conftest import mounted_tmpfs
from pixelmill.config import Settings

pytestmark = pytest.mark.slow

DISK_MB = 48


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A DISK_MB tmpfs mounted for this test: a data dir that fills up for real."""
    with mounted_tmpfs(tmp_path / "disk", DISK_MB) as folder:
        yield folder


def fill(handle: int) -> None:
    """Write to ``handle`` until its file system has not one free byte left."""
    chunk = b"\0" * (1 << 20)
    for size in (len(chunk), 4096, 1):  # big writes first, then the last crumbs
        try:
            while True:
                os.write(handle, chunk[:size])
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise


@contextlib.contextmanager
def disk_kept_full(folder: Path) -> Iterator[None]:
    """Fill ``folder``'s file system and keep it full: whatever the service frees (a failed
    image's partial files) is taken again at once, so every write it tries fails."""
    filler = folder / "filler"
    handle = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    stop = threading.Event()

    def keep_full() -> None:
        while not stop.is_set():
            fill(handle)
            stop.wait(0.005)

    fill(handle)
    hog = threading.Thread(target=keep_full, daemon=True)
    hog.start()
    try:
        yield
    finally:
        stop.set()
        hog.join(10)
        os.close(handle)
        filler.unlink()


def wait_for_health(client: httpx.Client, status: int, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/healthz")
        if response.status_code == status:
            body: dict[str, object] = response.json()
            return body
        assert time.monotonic() < deadline, f"/healthz never answered {status}: {response.text}"
        time.sleep(0.1)


def test_a_full_disk_holds_outcomes_until_space_is_freed_then_the_batch_finishes(
    small_disk: Path,
) -> None:
    """Issue 6 items 6 and 16: writes that fail on a full disk used to leave images
    ``processing`` for ever while /healthz said ok."""
    data_dir = small_disk / "data"
    with app_client(Settings(data_dir=data_dir, workers=1)) as client:
        warm = client.post("/v1/batches", files=[upload("warm.jpg", small_jpeg(8000))]).json()
        wait_for_batch(client, warm["batch_id"])
        files = [upload(f"{i}.jpg", slow_jpeg(8100 + i, (900, 600))) for i in range(5)]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        with disk_kept_full(small_disk):
            health = wait_for_health(client, 503, timeout_s=120)
            assert health["status"] == "unavailable"
            assert "store" in str(health.get("reason", "")), health
            # Reads still work and the counts still add up while writes fail.
            status = client.get(f"/v1/batches/{batch_id}")
            assert status.status_code == 200
            check_invariant(status.json())
            assert status.json()["pending"] >= 1
        final = wait_for_batch(client, batch_id, timeout_s=180)
        assert final["pending"] == 0 and final["total"] == 5
        assert all(image["status"] != "processing" for image in final["images"])
        wait_for_health(client, 200, timeout_s=30)
        # The disk works again: a new upload renders.
        after = client.post("/v1/batches", files=[upload("after.jpg", small_jpeg(8001))]).json()
        assert wait_for_batch(client, after["batch_id"])["completed"] == 1
    with contextlib.suppress(FileNotFoundError):
        wait_for_empty_spool(data_dir)
