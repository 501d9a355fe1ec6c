"""Cancelling a batch over real HTTP: the batch ends ``cancelled`` and says so everywhere."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_helpers import (
    slow_jpeg,
    small_jpeg,
    truncated_jpeg,
    upload,
    wait_for_batch,
)
from api_server import app_client, one_worker_settings
from webhook_receiver import webhook_receiver


@pytest.fixture(params=["sqlite", "redis"])
def one_worker_client(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[httpx.Client]:
    """The service with one worker, on each store."""
    # Callbacks go to a receiver on 127.0.0.1, which the address policy refuses by default.
    monkeypatch.setenv("PIXELMILL_WEBHOOK_ALLOW_PRIVATE", "true")
    with app_client(one_worker_settings(request, tmp_path / "data", request.param)) as client:
        yield client


# Several cancels in a row: the lost race needs no luck to show.
ATTEMPTS = 20
# One queued image: a single engine callback is enough to empty the batch.
SIZE = 1


def metric_counts(client: httpx.Client) -> dict[str, float]:
    """``pixelmill_images_total`` by status, from /metrics."""
    text = client.get("/metrics").text
    pattern = r'^pixelmill_images_total\{status="(\w+)"\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def test_a_batch_whose_images_are_all_queued_ends_cancelled_and_the_webhook_says_so(
    one_worker_client: httpx.Client,
) -> None:
    """Issue 6 item 1: the engine's sweep used to empty the batch first, ending it
    ``completed`` before the store's cancel ran."""
    client = one_worker_client
    with webhook_receiver() as receiver:
        # One worker busy with a slow image: every image of the next batch stays queued.
        blockers: list[str] = []
        for attempt in range(ATTEMPTS):
            keep_the_worker_busy(client, blockers)
            files = [upload(f"{i}.jpg", small_jpeg(7000 + 10 * attempt + i)) for i in range(SIZE)]
            created = client.post(
                "/v1/batches", files=files, data={"callback_url": receiver.url}
            ).json()
            answer = client.post(f"/v1/batches/{created['batch_id']}/cancel")
            assert answer.status_code == 202
            assert answer.json()["status"] == "cancelled"
            final = wait_for_batch(client, created["batch_id"])
            assert final["status"] == "cancelled", final
            assert final["cancelled"] == SIZE and final["completed"] == 0
            calls = receiver.wait_for(attempt + 1)
            body = json.loads(calls[attempt].body)
            assert body["batch_id"] == created["batch_id"]
            assert body["status"] == "cancelled"
            for image in final["images"]:
                assert image["status"] == "cancelled"
                assert image["error"]["code"] == "cancelled" and image["error"]["message"]
        for blocker in blockers:
            wait_for_batch(client, blocker, timeout_s=120)


def keep_the_worker_busy(client: httpx.Client, blockers: list[str]) -> None:
    """Make sure the one worker is rendering a slow image now: a new one when the last has
    finished (quicker encoders can end it before every attempt has run)."""
    if blockers and client.get(f"/v1/batches/{blockers[-1]}").json()["finished_at"] is None:
        return
    image = slow_jpeg(42 + len(blockers), (2400, 1600))
    blockers.append(
        client.post("/v1/batches", files=[upload("slow.jpg", image)]).json()["batch_id"]
    )
    deadline = time.monotonic() + 30
    while client.get(f"/v1/batches/{blockers[-1]}").json()["images"][0]["status"] != "processing":
        assert time.monotonic() < deadline, "the slow image never started"
        time.sleep(0.01)


def test_every_cancelled_image_has_a_cancelled_error_and_metrics_match_the_batches(
    one_worker_client: httpx.Client,
) -> None:
    """Issue 6 item 5: one story for cancelled images, whichever path cancelled them, and
    /metrics' image counters equal the sums over every batch after a mixed run."""
    client = one_worker_client
    shared = small_jpeg(7100)
    mixed = [upload("a.jpg", shared), upload("copy.jpg", shared),
             upload("bad.jpg", truncated_jpeg()), upload("text.png", b"hello", "image/png"),
             upload("b.jpg", small_jpeg(7101))]  # fmt: skip
    batch_ids = [client.post("/v1/batches", files=mixed).json()["batch_id"]]
    wait_for_batch(client, batch_ids[0])
    # A batch cancelled while one image renders and the rest wait: both cancel paths.
    slow = [upload(f"s{i}.jpg", slow_jpeg(7200 + i)) for i in range(4)]
    slow_id = client.post("/v1/batches", files=slow).json()["batch_id"]
    batch_ids.append(slow_id)
    for _ in range(400):  # wait (bounded) until its first image is being rendered
        if client.get(f"/v1/batches/{slow_id}").json()["status"] == "processing":
            break
        time.sleep(0.05)
    client.post(f"/v1/batches/{slow_id}/cancel")
    # And one cancelled while all of its images are still queued behind nothing at all.
    queued = [upload(f"q{i}.jpg", small_jpeg(7300 + i)) for i in range(3)]
    queued_id = client.post("/v1/batches", files=queued).json()["batch_id"]
    batch_ids.append(queued_id)
    client.post(f"/v1/batches/{queued_id}/cancel")

    totals = {"done": 0, "duplicate": 0, "failed": 0, "cancelled": 0}
    for batch_id in batch_ids:
        final = wait_for_batch(client, batch_id, timeout_s=120)
        for image in final["images"]:
            totals[image["status"]] += 1
            if image["status"] == "cancelled":
                assert image["error"] is not None, image
                assert image["error"]["code"] == "cancelled" and image["error"]["message"]
    assert totals["cancelled"] >= 4 and totals["failed"] == 2 and totals["duplicate"] == 1
    counts = metric_counts(client)
    assert {status: int(counts.get(status, 0)) for status in totals} == totals
