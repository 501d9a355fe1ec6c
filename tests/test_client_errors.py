"""The clients on the edges: resuming after ``done``, a service that cannot be reached, a bad
base URL, a download that cannot be written. Real uvicorn on 127.0.0.1, real images."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from api_helpers import small_jpeg
from api_server import free_port
from client_service import client_fixture, service_fixture  # noqa: F401
from pixelmill.client import AsyncClient, Client, DoneEvent, PixelmillError, _wire

UNKNOWN_BATCH = "0" * 32


def refused_url() -> str:
    """An address where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


def finished_batch(client: Client, folder: Path, seed: int) -> str:
    path = folder / f"image-{seed}.jpg"
    path.write_bytes(small_jpeg(seed))
    batch_id = client.create_batch([path]).batch_id
    client.wait(batch_id, timeout=60)
    return batch_id


@pytest.mark.parametrize("resume_from", ["done", "past the end"])
def test_resuming_at_or_after_done_yields_done_at_once(
    client: Client, tmp_path: Path, resume_from: str
) -> None:
    """The service sends done again to a stream resumed from it: the client delivers it,
    rather than dropping it as seen and reconnecting until a network_error."""
    batch_id = finished_batch(client, tmp_path, 1)
    done = list(client.iter_events(batch_id))[-1]
    assert isinstance(done, DoneEvent) and done.id is not None
    last_id = done.id if resume_from == "done" else 999_999
    started = time.monotonic()
    again = list(
        client.iter_events(batch_id, last_event_id=last_id, reconnect_delay=0, max_reconnects=1)
    )
    assert [type(event) for event in again] == [DoneEvent]
    assert again[0].id == done.id and time.monotonic() - started < 5


def test_async_resuming_from_done_yields_done(service: str, client: Client, tmp_path: Path) -> None:
    batch_id = finished_batch(client, tmp_path, 2)

    async def resumed() -> list[object]:
        async with AsyncClient(service) as async_client:
            events = [e async for e in async_client.iter_events(batch_id)]
            stream = async_client.iter_events(
                batch_id, last_event_id=events[-1].id, reconnect_delay=0, max_reconnects=1
            )
            return [type(e) async for e in stream]

    assert asyncio.run(resumed()) == [DoneEvent]


def test_wait_on_a_refused_connection_raises_network_error_at_its_timeout() -> None:
    """Not a bare 'did not finish within 1 s': the service could not be reached."""
    started = time.monotonic()
    with Client(refused_url()) as client, pytest.raises(PixelmillError) as raised:
        client.wait(UNKNOWN_BATCH, timeout=1)
    assert raised.value.code == "network_error" and raised.value.status is None
    assert "unreachable" in raised.value.message and "refused" in raised.value.message.lower()
    assert time.monotonic() - started < 4


def test_async_wait_on_a_refused_connection_raises_network_error_at_its_timeout() -> None:
    async def waited() -> None:
        async with AsyncClient(refused_url()) as client:
            await client.wait(UNKNOWN_BATCH, timeout=1)

    with pytest.raises(PixelmillError) as raised:
        asyncio.run(waited())
    assert raised.value.code == "network_error" and "unreachable" in raised.value.message


@pytest.mark.timeout(30)
def test_wait_without_a_timeout_gives_up_on_a_service_that_stays_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """timeout=None does not retry a refused connection forever: after UNREACHABLE_LIMIT_S
    (30 s; shortened here) without an answer it raises network_error."""
    monkeypatch.setattr(_wire, "UNREACHABLE_LIMIT_S", 2.0, raising=False)
    started = time.monotonic()
    with Client(refused_url()) as client, pytest.raises(PixelmillError) as raised:
        client.wait(UNKNOWN_BATCH)
    assert raised.value.code == "network_error" and "unreachable" in raised.value.message
    assert 2.0 <= time.monotonic() - started < 6

    async def waited() -> None:
        async with AsyncClient(refused_url()) as async_client:
            await async_client.wait(UNKNOWN_BATCH)

    with pytest.raises(PixelmillError) as async_raised:
        asyncio.run(waited())
    assert async_raised.value.code == "network_error"


@pytest.mark.parametrize(
    "base_url", ["127.0.0.1:8000", "localhost:8000", "ftp://host", "http://[::1"]
)
def test_a_base_url_that_is_no_http_address_is_refused_at_construction(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        Client(base_url)
    with pytest.raises(ValueError, match="base_url"):
        AsyncClient(base_url)


def test_a_download_that_cannot_be_written_names_the_file_asked_for(
    client: Client, service: str, tmp_path: Path
) -> None:
    """The error is about dest, not the hidden .part file written first."""
    batch_id = finished_batch(client, tmp_path, 3)
    image = client.get_batch(batch_id).images[0]
    assert image.sha256 and image.renditions
    rendition = image.renditions[0]
    dest = tmp_path / "no-such-folder" / "picture.jpg"
    with pytest.raises(FileNotFoundError) as raised:
        client.download(image.sha256, rendition.name, rendition.format, dest=dest)
    assert raised.value.filename == str(dest) and ".part" not in str(raised.value)

    async def download() -> None:
        async with AsyncClient(service) as async_client:
            assert image.sha256
            await async_client.download(image.sha256, rendition.name, rendition.format, dest)

    with pytest.raises(FileNotFoundError) as async_raised:
        asyncio.run(download())
    assert async_raised.value.filename == str(dest) and ".part" not in str(async_raised.value)
    assert list(tmp_path.glob("**/*.part")) == []
