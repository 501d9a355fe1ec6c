"""``pixelmill.client.AsyncClient`` against a real service; each test runs its own event loop
(``asyncio.run``), as a program using the client would."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest

from api_helpers import slow_jpeg, small_jpeg, truncated_jpeg
from api_server import free_port, running_in_thread
from client_service import service_fixture  # noqa: F401
from cutting_proxy import CuttingProxy
from images import format_by_magic
from pixelmill.api.app import create_app
from pixelmill.client import (
    AsyncClient,
    DoneEvent,
    Event,
    ImageAccepted,
    ImageEvent,
    PixelmillError,
    WaitedImage,
)
from pixelmill.config import Settings

UNKNOWN_BATCH = "0" * 32
API_KEY = "async-client-key"


def write_images(
    folder: Path, seeds: range, make: Callable[[int], bytes] = small_jpeg
) -> list[Path]:
    paths = []
    for seed in seeds:
        path = folder / f"image-{seed}.jpg"
        path.write_bytes(make(seed))
        paths.append(path)
    return paths


def image_events(events: list[Event]) -> list[tuple[int | None, str]]:
    return [(e.id, e.image.image_id) for e in events if isinstance(e, ImageEvent)]


def test_a_batch_renders_and_its_renditions_download(
    service: str, corpus: Path, tmp_path: Path
) -> None:
    """create_batch, wait, download (bytes and to a folder) and manifest, awaited."""
    paths = [corpus / "photos/concert.jpg", *write_images(tmp_path, range(10, 12))]

    async def scenario() -> None:
        async with AsyncClient(service) as client:
            accepted = await client.create_batch(paths)
            assert accepted.total == 3
            batch = await client.wait(accepted.batch_id, timeout=120)
            assert batch.status == "completed" and batch.completed == 3
            for image in batch.images:
                assert image.status == "done" and image.sha256 is not None
                assert len(image.renditions) == 6
                rendition = image.renditions[0]
                data = await client.download(image.sha256, rendition.name, rendition.format)
                assert data == httpx.get(service + rendition.path).content
                assert format_by_magic(data) == rendition.format
                saved = await client.download(image.sha256, "large", "webp", dest=tmp_path)
                assert saved == tmp_path / "large.webp"
                assert format_by_magic(saved.read_bytes()) == "webp"
                manifest = await client.manifest(image.sha256)
                assert len(manifest.renditions) == 6
        assert not list(tmp_path.glob(".*.part")), "no partial downloads left"

    asyncio.run(scenario())


def test_errors_carry_the_code_and_status(service: str) -> None:
    """not_found from get_batch and from the event stream; network_error with no service."""

    async def scenario() -> None:
        async with AsyncClient(service) as client:
            with pytest.raises(PixelmillError) as missing:
                await client.get_batch(UNKNOWN_BATCH)
            assert (missing.value.code, missing.value.status) == ("not_found", 404)
            with pytest.raises(PixelmillError) as no_events:
                async for _ in client.iter_events(UNKNOWN_BATCH):
                    pass
            assert no_events.value.code == "not_found"
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            with pytest.raises(PixelmillError) as down:
                await nowhere.get_batch(UNKNOWN_BATCH)
            assert down.value.code == "network_error" and down.value.status is None

    asyncio.run(scenario())


def test_the_api_key_is_sent(tmp_path: Path) -> None:
    """Without the key: unauthorized; with it the batch renders."""
    [path] = write_images(tmp_path, range(20, 21))
    settings = Settings(data_dir=tmp_path / "data", workers=1, api_key=API_KEY)

    async def scenario(url: str) -> None:
        async with AsyncClient(url) as anonymous:
            with pytest.raises(PixelmillError) as refused:
                await anonymous.create_batch([path])
            assert (refused.value.code, refused.value.status) == ("unauthorized", 401)
        async with AsyncClient(url, api_key=API_KEY) as client:
            batch = await client.wait((await client.create_batch([path])).batch_id, timeout=60)
            assert [image.status for image in batch.images] == ["done"]

    with running_in_thread(create_app(settings)) as url:
        asyncio.run(scenario(url))


def test_events_resume_after_the_connection_is_cut(service: str, tmp_path: Path) -> None:
    """A stream cut mid-event resumes with Last-Event-ID: the same events, none twice."""
    paths = write_images(tmp_path, range(30, 38))

    async def scenario() -> None:
        async with AsyncClient(service) as client:
            batch_id = (await client.create_batch(paths)).batch_id
            with CuttingProxy(service, cut_streams=1, cut_after_images=2) as proxy:
                async with AsyncClient(proxy.url) as through_proxy:
                    events = [
                        e async for e in through_proxy.iter_events(batch_id, reconnect_delay=0.05)
                    ]
            assert proxy.cuts == 1 and len(proxy.events_requests) == 2
            assert proxy.events_requests[1].get("last-event-id") is not None
            ids = [event.id for event in events if event.id is not None]
            assert len(ids) == len(events) and ids == sorted(set(ids))
            assert isinstance(events[-1], DoneEvent)
            uninterrupted = [e async for e in client.iter_events(batch_id)]
            assert image_events(events) == image_events(uninterrupted)
            assert len(image_events(events)) == len(paths)

            # Stopping early and resuming from the last id read gives the rest, once.
            first: list[Event] = []
            async with aclosing(client.iter_events(batch_id)) as stream:
                async for event in stream:
                    first.append(event)
                    if len(first) == 3:
                        break
            rest = [e async for e in client.iter_events(batch_id, last_event_id=first[-1].id)]
            assert image_events(first + rest) == image_events(uninterrupted)

    asyncio.run(scenario())


def test_create_image_and_cancel(service: str, tmp_path: Path) -> None:
    """create_image with and without wait, cancel, and wait's timeout, all awaited."""
    [good] = write_images(tmp_path, range(40, 41))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(truncated_jpeg())
    slow = write_images(tmp_path, range(50, 60), slow_jpeg)
    slower = write_images(tmp_path, range(60, 66), slow_jpeg)

    async def scenario() -> None:
        async with AsyncClient(service) as client:
            waited = await client.create_image(good, wait=True, timeout=60)
            assert isinstance(waited, WaitedImage) and waited.status == "done"
            accepted = await client.create_image(bad)
            assert isinstance(accepted, ImageAccepted)
            [failed] = (await client.wait(accepted.batch_id, timeout=60)).images
            assert failed.error is not None and failed.error.code == "corrupt_image"

            batch_id = (await client.create_batch(slow)).batch_id
            assert (await client.cancel(batch_id)).status == "cancelled"
            final = await client.wait(batch_id, timeout=60)
            assert final.is_finished and final.status == "cancelled" and final.cancelled >= 1
            running = (await client.create_batch(slower)).batch_id
            with pytest.raises(PixelmillError) as raised:
                await client.wait(running, timeout=0.3)
            assert raised.value.code == "timeout" and raised.value.status is None
            await client.cancel(running)

    asyncio.run(scenario())


def test_iter_events_is_an_async_generator_for_aclosing() -> None:
    """``contextlib.aclosing(client.iter_events(...))``, as docs/client.md advises, needs
    ``aclose``: iter_events is typed (and is) an async generator. ``make lint`` type-checks
    that use in tests/client_typing_usage.py."""
    annotation = inspect.signature(AsyncClient.iter_events).return_annotation
    assert "AsyncGenerator" in str(annotation), annotation
    events = AsyncClient("http://127.0.0.1:1").iter_events("0" * 32)
    assert inspect.isasyncgen(events)
    asyncio.run(events.aclose())
