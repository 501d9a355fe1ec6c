"""The service on the Redis store: the same batch life cycle as on SQLite, over real Redis."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_helpers import (
    check_invariant,
    read_events,
    slow_jpeg,
    small_jpeg,
    truncated_jpeg,
    upload,
    wait_for_batch,
    wait_for_empty_spool,
)
from api_server import app_client
from pixelmill.config import Settings


@pytest.fixture
def redis_client(
    tmp_path: Path, redis_server_url: str, redis_prefix: str
) -> Iterator[httpx.Client]:
    settings = Settings(
        data_dir=tmp_path / "data", store=redis_server_url, redis_prefix=redis_prefix, workers=2
    )
    with app_client(settings) as client:
        yield client


def test_batches_events_duplicates_and_cancel_on_redis(
    redis_client: httpx.Client, tmp_path: Path
) -> None:
    client = redis_client
    shared = small_jpeg(5000)
    files = [upload("a.jpg", shared), upload("b.jpg", small_jpeg(5001)),
             upload("copy.jpg", shared), upload("bad.jpg", truncated_jpeg()),
             upload("text.png", b"hello", "image/png")]  # fmt: skip
    created = client.post("/v1/batches", files=files).json()
    events = read_events(client, created["batch_id"])
    assert events[-1][0] == "done" and [n for n, _ in events].count("image") == 5
    status = wait_for_batch(client, created["batch_id"])
    assert (status["completed"], status["duplicates"], status["failed"]) == (3, 1, 2)

    again = client.post("/v1/batches", files=[upload("later.jpg", shared)]).json()
    later = wait_for_batch(client, again["batch_id"])
    assert later["images"][0]["status"] == "duplicate"
    assert later["images"][0]["sha256"] == hashlib.sha256(shared).hexdigest()

    slow = [upload(f"{i}.jpg", slow_jpeg(5100 + i)) for i in range(6)]
    batch_id = client.post("/v1/batches", files=slow).json()["batch_id"]
    cancelled = client.post(f"/v1/batches/{batch_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    check_invariant(cancelled.json())
    final = wait_for_batch(client, batch_id)
    assert final["status"] == "cancelled" and final["cancelled"] >= 1
    wait_for_empty_spool(tmp_path / "data")
