"""Server-Sent Events over real HTTP: increasing ids, a retry hint, resume by Last-Event-ID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_helpers import read_sse, small_jpeg, truncated_jpeg, upload, wait_for_batch
from api_server import app_client, one_worker_settings

IMAGES = 16


@pytest.fixture(params=["sqlite", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    """The service with one worker (so a batch takes a while), on each store."""
    with app_client(one_worker_settings(request, tmp_path / "data", request.param)) as served:
        yield served


def test_a_reconnect_with_last_event_id_resumes_without_repeats_or_gaps(
    client: httpx.Client,
) -> None:
    """Issue 6 item 13: ids used to repeat and Last-Event-ID was ignored (a full replay)."""
    files = [upload(f"{i}.jpg", small_jpeg(9500 + i, (900, 700))) for i in range(IMAGES - 1)]
    files.append(upload("bad.jpg", truncated_jpeg()))
    batch_id = client.post("/v1/batches", files=files).json()["batch_id"]

    first, retries = read_sse(client, batch_id, stop_after_images=4)
    assert retries and int(retries[0]) > 0, "a retry hint"
    last_id = first[-1][0]
    assert last_id is not None
    rest, _ = read_sse(client, batch_id, last_event_id=last_id)
    events = first + rest

    ids = [int(event_id) for event_id, _, _ in events if event_id is not None]
    assert len(ids) == len(events), "every event has an id"
    assert ids == sorted(set(ids)), f"ids increase and never repeat: {ids}"
    images = [data["image_id"] for _, name, data in events if name == "image"]
    assert len(images) == len(set(images)) == IMAGES, "each image once, none missed"
    assert events[-1][1] == "done" and events[-1][2]["pending"] == 0
    final = wait_for_batch(client, batch_id)
    assert {image["image_id"] for image in final["images"]} == set(images)

    # After done, a reconnect gets 204: nothing more, and a browser's EventSource stops
    # reconnecting (it used to get done again, every 3 s, until the URL expired).
    after = client.get(f"/v1/batches/{batch_id}/events", headers={"Last-Event-ID": str(ids[-1])})
    assert (after.status_code, after.content) == (204, b"")
    # Resuming from an earlier event still ends with done.
    resumed, _ = read_sse(client, batch_id, last_event_id=str(ids[-2]))
    assert [name for _, name, _ in resumed][-1] == "done"


def test_a_stream_from_the_start_lists_every_image_once(client: httpx.Client) -> None:
    files = [upload(f"{i}.jpg", small_jpeg(9600 + i)) for i in range(6)]
    batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
    events, _ = read_sse(client, batch_id, last_event_id="not-a-number")
    images = [data["image_id"] for _, name, data in events if name == "image"]
    assert len(images) == len(set(images)) == 6
    assert [name for _, name, _ in events][-1] == "done"
