"""Review of the service, stores, progress and webhooks: the defects found, each kept out."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import read_sse, small_jpeg, upload, wait_for_batch
from api_server import app_client
from pixelmill.api.events import parse_last_event_id
from pixelmill.api.service import BatchService
from pixelmill.config import Settings
from pixelmill.store import NewImage, open_store
from webhook_receiver import webhook_receiver

IMAGES = 3


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with app_client(Settings(data_dir=tmp_path / "data", workers=1)) as served:
        yield served


def finished_batch(client: httpx.Client) -> str:
    files = [upload(f"{i}.jpg", small_jpeg(7700 + i)) for i in range(IMAGES)]
    batch_id: str = client.post("/v1/batches", files=files).json()["batch_id"]
    assert wait_for_batch(client, batch_id)["status"] == "completed"
    return batch_id


def raw_sse(client: httpx.Client, batch_id: str, last_event_id: bytes) -> list[str]:
    """The event names of a stream opened with raw ``Last-Event-ID`` bytes (any octet)."""
    url = f"/v1/batches/{batch_id}/events"
    with client.stream("GET", url, headers={b"Last-Event-ID": last_event_id}, timeout=30) as r:
        assert r.status_code == 200, r.read()
        return [line.removeprefix("event: ") for line in r.iter_lines() if "event: " in line]


@pytest.mark.parametrize("value", ["²", "¹²", "١٢", "1²", " 7 ", "-3", "1e3", "9" * 19])
def test_last_event_id_is_ascii_digits_or_ignored(value: str) -> None:
    """'²'.isdigit() is True but int('²') raises: the header reached a 500 with a traceback."""
    expected = 7 if value == " 7 " else 0
    assert parse_last_event_id(value) == expected


def test_a_non_ascii_digit_last_event_id_replays_the_stream(client: httpx.Client) -> None:
    """Byte 0xB2 is '²' in Latin-1: the stream used to answer 500 'internal'."""
    batch_id = finished_batch(client)
    names = raw_sse(client, batch_id, "²".encode("latin-1"))
    assert names.count("image") == IMAGES and names[-1] == "done"


def test_a_last_event_id_from_the_future_replays_the_stream(client: httpx.Client) -> None:
    """An id the batch never sent (another batch's, an emptied store) skipped every event:
    only ``done`` came, with an id lower than the one sent."""
    batch_id = finished_batch(client)
    events, _ = read_sse(client, batch_id, last_event_id=str(10**15))
    names = [name for _, name, _ in events]
    assert names.count("image") == IMAGES and names[-1] == "done", names
    ids = [int(event_id) for event_id, _, _ in events if event_id is not None]
    assert ids == sorted(set(ids))
    # The batch's own last id (done's) still resumes to just the end.
    again, _ = read_sse(client, batch_id, last_event_id=str(ids[-1]))
    assert [name for _, name, _ in again] == ["done"]


def test_a_callback_owed_and_finished_again_at_start_is_sent_once(tmp_path: Path) -> None:
    """At start, a batch that resume() finishes (its image's spool file is gone) wrote its
    marker and queued its callback, then the outbox walk found that marker and sent it again."""
    data_dir = tmp_path / "data"
    with webhook_receiver() as receiver:
        settings = Settings(data_dir=data_dir, workers=1, webhook_allow_private=True)
        store = open_store(settings.store, data_dir)
        lost = NewImage("a" * 32, "lost.jpg", "b" * 64, str(data_dir / "spool" / "x" / "lost"))
        store.create_batch("c" * 32, [lost], callback_url=receiver.url)
        store.close()
        service = BatchService(settings, webhook_backoff_s=0.05)
        service.start()
        try:
            calls = receiver.wait_for(1)
            time.sleep(1.0)  # a second one would come at once
            calls = receiver.wait_for(1)
        finally:
            service.stop()
    bodies: list[dict[str, Any]] = [json.loads(call.body) for call in calls]
    assert [body["batch_id"] for body in bodies] == ["c" * 32], bodies
    assert bodies[0]["failed"] == 1 and bodies[0]["status"] == "completed"
    assert list((data_dir / "callbacks").iterdir()) == []
