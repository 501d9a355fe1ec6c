"""``pixelmill.client.Client`` against a real service (uvicorn on 127.0.0.1, real images)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

from api_helpers import slow_jpeg, small_jpeg, truncated_jpeg
from api_server import free_port, running_in_thread
from client_service import client_fixture, service_fixture  # noqa: F401
from cutting_proxy import CuttingProxy
from images import format_by_magic
from pixelmill.api.app import create_app
from pixelmill.client import (
    Batch,
    Client,
    DoneEvent,
    Event,
    ImageAccepted,
    ImageEvent,
    PixelmillError,
    ProgressEvent,
    WaitedImage,
)
from pixelmill.client._sse import ServerSentEvent, SSEDecoder
from pixelmill.config import Settings

CORPUS_IMAGES = (
    "exif_orientation/Landscape_6.jpg",
    "photos/Flag_of_the_Netherlands-16bit.png",
    "photos/lossless1.webp",
)
API_KEY = "client-test-key"
UNKNOWN_BATCH = "0" * 32


def write_jpegs(folder: Path, seeds: range, size: tuple[int, int] = (640, 480)) -> list[Path]:
    paths = []
    for seed in seeds:
        path = folder / f"image-{seed}.jpg"
        path.write_bytes(small_jpeg(seed, size))
        paths.append(path)
    return paths


def write_slow_jpegs(folder: Path, seeds: range) -> list[Path]:
    paths = []
    for seed in seeds:
        path = folder / f"slow-{seed}.jpg"
        path.write_bytes(slow_jpeg(seed))
        paths.append(path)
    return paths


def image_events(events: list[Event]) -> list[tuple[int | None, str, str]]:
    return [(e.id, e.image.image_id, e.image.status) for e in events if isinstance(e, ImageEvent)]


def test_three_corpus_images_render_and_download_as_served(
    client: Client, service: str, corpus: Path
) -> None:
    """create_batch streams real files, wait returns every image's renditions, and
    download gives the bytes the service serves, in the named format."""
    accepted = client.create_batch([corpus / name for name in CORPUS_IMAGES])
    assert accepted.total == 3 and accepted.status in ("queued", "processing")
    batch = client.wait(accepted.batch_id, timeout=120)
    assert batch.status == "completed" and batch.is_finished
    assert (batch.completed, batch.failed, batch.pending) == (3, 0, 0)
    assert sorted(image.filename for image in batch.images) == sorted(
        Path(name).name for name in CORPUS_IMAGES
    )
    for image in batch.images:
        assert image.status == "done" and image.sha256 is not None
        made = {(r.name, r.format) for r in image.renditions}
        assert made == {(p, f) for p in ("thumbnail", "medium", "large") for f in ("jpeg", "webp")}
        for rendition in image.renditions:
            data = client.download(image.sha256, rendition.name, rendition.format)
            assert data == httpx.get(service + rendition.path).content
            assert len(data) == rendition.bytes
            assert format_by_magic(data) == rendition.format
        manifest = client.manifest(image.sha256)
        assert manifest.sha256 == image.sha256
        assert {(r.name, r.format) for r in manifest.renditions} == made


def test_download_streams_into_a_file_or_a_folder(client: Client, tmp_path: Path) -> None:
    """dest a file: written there; dest a folder: <preset>.<ext> in it; no partial files."""
    [path] = write_jpegs(tmp_path, range(100, 101))
    image = client.create_image(path, wait=True)
    assert isinstance(image, WaitedImage) and image.status == "done" and image.sha256
    expected = client.download(image.sha256, "large", "jpeg")
    assert format_by_magic(expected) == "jpeg"

    into_file = client.download(image.sha256, "large", "jpeg", dest=tmp_path / "mine.jpg")
    assert into_file == tmp_path / "mine.jpg" and into_file.read_bytes() == expected
    folder = tmp_path / "out"
    folder.mkdir()
    into_folder = client.download(image.sha256, "large", "jpg", dest=folder)
    assert into_folder == folder / "large.jpg" and into_folder.read_bytes() == expected
    webp = client.download(image.sha256, "thumbnail", "webp", dest=folder)
    assert webp.name == "thumbnail.webp" and format_by_magic(webp.read_bytes()) == "webp"

    with pytest.raises(PixelmillError) as missing:
        client.download(image.sha256, "nosuchpreset", "png", dest=folder)
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    assert sorted(p.name for p in folder.iterdir()) == ["large.jpg", "thumbnail.webp"]

    # A dest ending in a separator names a folder, created if missing (not a file "new").
    created = client.download(image.sha256, "large", "jpeg", dest=f"{tmp_path}/new/{image.sha256}/")
    assert created == tmp_path / "new" / image.sha256 / "large.jpg"
    assert created.read_bytes() == expected


def test_uploads_stream_from_disk_without_reading_files_whole(
    client: Client, tmp_path: Path
) -> None:
    """A 48 MB upload costs the client far less memory than the file (the service here runs
    in the same process and streams too, so the peak covers both)."""
    big = tmp_path / "big.jpg"
    with big.open("wb") as file:
        file.write(small_jpeg(1100))
        for _ in range(48):
            file.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    try:
        accepted = client.create_batch([big])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert accepted.total == 1
    assert peak < 12 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 48 MiB file"
    client.wait(accepted.batch_id, timeout=120)


def test_unknown_ids_raise_not_found(client: Client) -> None:
    """Each call on an id the service does not know raises not_found with status 404."""
    for call in (
        lambda: client.get_batch(UNKNOWN_BATCH),
        lambda: client.get_batch("no-such-batch"),
        lambda: client.cancel(UNKNOWN_BATCH),
        lambda: list(client.iter_events(UNKNOWN_BATCH)),
        lambda: client.wait(UNKNOWN_BATCH, timeout=10),
        lambda: client.manifest("f" * 64),
    ):
        with pytest.raises(PixelmillError) as raised:
            call()
        assert (raised.value.code, raised.value.status) == ("not_found", 404)
        assert raised.value.message and not raised.value.transient


def test_bad_arguments_are_refused_before_sending(client: Client, tmp_path: Path) -> None:
    """A bad format, hash or path is a local error: nothing reaches the service."""
    with pytest.raises(ValueError, match="format"):
        client.download("a" * 64, "large", "gif")
    with pytest.raises(ValueError, match="SHA-256"):
        client.manifest("../../etc")
    with pytest.raises(FileNotFoundError):
        client.create_batch([tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="one or more"):
        client.create_batch([])


def test_no_service_is_a_network_error() -> None:
    """Nothing listening: code network_error, no status, worth retrying."""
    with (
        Client(f"http://127.0.0.1:{free_port()}") as client,
        pytest.raises(PixelmillError) as raised,
    ):
        client.get_batch(UNKNOWN_BATCH)
    assert raised.value.code == "network_error" and raised.value.status is None
    assert raised.value.transient


class _PlainErrors(http.server.BaseHTTPRequestHandler):
    """Answers like a proxy in front of a service: HTML error pages, no JSON."""

    def do_GET(self) -> None:
        status = 502 if "gateway" in self.path else 500
        body = b"<html><body><h1>Bad things</h1></body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_non_json_error_page_gets_a_code_from_its_status() -> None:
    """An HTML 502 from a proxy is unavailable (transient); a plain 500 is internal."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainErrors)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = f"http://127.0.0.1:{server.server_port}/gateway"
        with Client(gateway) as client, pytest.raises(PixelmillError) as bad_gateway:
            client.get_batch(UNKNOWN_BATCH)
        assert (bad_gateway.value.code, bad_gateway.value.status) == ("unavailable", 502)
        assert bad_gateway.value.transient and "Bad things" in bad_gateway.value.message
        origin = f"http://127.0.0.1:{server.server_port}"
        with Client(origin) as client, pytest.raises(PixelmillError) as internal:
            client.get_batch(UNKNOWN_BATCH)
        assert (internal.value.code, internal.value.status) == ("internal", 500)
        assert not internal.value.transient
    finally:
        server.shutdown()
        server.server_close()


def test_the_api_key_is_sent(tmp_path: Path) -> None:
    """Without the key (or with a wrong one) every call is unauthorized; with it, all work."""
    [path] = write_jpegs(tmp_path, range(200, 201))
    settings = Settings(data_dir=tmp_path / "data", workers=1, api_key=API_KEY)
    with running_in_thread(create_app(settings)) as url:
        for key in (None, "wrong-key"):
            with Client(url, api_key=key) as anonymous:
                for call in (
                    lambda: anonymous.create_batch([path]),
                    lambda: anonymous.get_batch(UNKNOWN_BATCH),
                    lambda: anonymous.download("a" * 64, "large", "jpeg"),
                ):
                    with pytest.raises(PixelmillError) as refused:
                        call()
                    assert (refused.value.code, refused.value.status) == ("unauthorized", 401)
        with Client(url, api_key=API_KEY) as client:
            batch = client.wait(client.create_batch([path]).batch_id, timeout=60)
            [image] = batch.images
            assert image.status == "done" and image.sha256 is not None
            data = client.download(image.sha256, "medium", "webp", dest=tmp_path)
            assert format_by_magic(data.read_bytes()) == "webp"
            assert [e for e in client.iter_events(batch.batch_id) if isinstance(e, DoneEvent)]


def test_events_resume_after_the_connection_is_cut_mid_event(
    client: Client, service: str, tmp_path: Path
) -> None:
    """The stream is cut twice in the middle of an image event: the client reconnects with
    Last-Event-ID and yields what one uninterrupted stream holds, nothing twice."""
    paths = write_jpegs(tmp_path, range(300, 310), (900, 700))
    batch_id = client.create_batch(paths).batch_id
    with (
        CuttingProxy(service, cut_streams=2, cut_after_images=3) as proxy,
        Client(proxy.url) as through_proxy,
    ):
        events = list(through_proxy.iter_events(batch_id, reconnect_delay=0.05))
    assert proxy.cuts == 2 and len(proxy.events_requests) == 3
    resumed_from = [request.get("last-event-id") for request in proxy.events_requests]
    assert resumed_from[0] is None and None not in resumed_from[1:]
    ids = [event.id for event in events if event.id is not None]
    assert len(ids) == len(events) and ids == sorted(set(ids)), f"increasing, unique: {ids}"
    for header in resumed_from[1:]:
        assert header is not None and int(header) in ids, "resumed after a delivered event"
    assert isinstance(events[-1], DoneEvent) and events[-1].batch.is_finished
    assert any(isinstance(event, ProgressEvent) for event in events)

    uninterrupted = list(client.iter_events(batch_id))
    assert image_events(events) == image_events(uninterrupted)
    assert len({image_id for _, image_id, _ in image_events(events)}) == len(paths)


def test_events_resume_from_an_id_read_earlier(client: Client, tmp_path: Path) -> None:
    """Stop reading after three events, start again from the last id: the rest, once."""
    paths = write_jpegs(tmp_path, range(400, 406))
    batch_id = client.create_batch(paths).batch_id
    first: list[Event] = []
    for event in client.iter_events(batch_id):
        first.append(event)
        if len(first) == 3:
            break
    rest = list(client.iter_events(batch_id, last_event_id=first[-1].id))
    assert isinstance(rest[-1], DoneEvent)
    uninterrupted = list(client.iter_events(batch_id))
    assert image_events(first + rest) == image_events(uninterrupted)
    assert len(image_events(first + rest)) == len(paths)


def test_wait_falls_back_to_polling_without_an_event_stream(
    client: Client, service: str, tmp_path: Path
) -> None:
    """A proxy that drops every event-stream request: wait still returns the finished batch."""
    paths = write_jpegs(tmp_path, range(500, 504))
    batch_id = client.create_batch(paths).batch_id
    with (
        CuttingProxy(service, refuse_events=True) as proxy,
        Client(proxy.url) as through_proxy,
    ):
        batch = through_proxy.wait(batch_id, timeout=60, poll_interval=0.1)
    assert proxy.events_requests, "the event stream was tried first"
    assert batch.is_finished and batch.completed == len(paths)
    assert all(image.status == "done" for image in batch.images)


def test_wait_gives_up_after_its_timeout(client: Client, tmp_path: Path) -> None:
    """wait(timeout=) raises code timeout on time, while the batch still renders."""
    batch_id = client.create_batch(write_slow_jpegs(tmp_path, range(8))).batch_id
    started = time.monotonic()
    with pytest.raises(PixelmillError) as raised:
        client.wait(batch_id, timeout=0.5)
    assert raised.value.code == "timeout" and raised.value.status is None
    assert time.monotonic() - started < 5
    client.cancel(batch_id)


def test_cancel_stops_a_batch(client: Client, tmp_path: Path) -> None:
    """cancel answers the cancelled status (twice alike); wait then sees the batch settle."""
    batch_id = client.create_batch(write_slow_jpegs(tmp_path, range(100, 112))).batch_id
    cancelled = client.cancel(batch_id)
    assert isinstance(cancelled, Batch) and cancelled.status == "cancelled"
    assert client.cancel(batch_id).status == "cancelled", "idempotent"
    final = client.wait(batch_id, timeout=60)
    assert final.status == "cancelled" and final.is_finished
    assert final.cancelled >= 1
    assert final.completed + final.failed + final.cancelled == final.total == 12
    assert {image.status for image in final.images} <= {"done", "failed", "cancelled"}


def test_create_image_without_and_with_waiting(client: Client, tmp_path: Path) -> None:
    """Without wait: an acceptance; with wait: the finished record, a failure included."""
    [good] = write_jpegs(tmp_path, range(600, 601))
    accepted = client.create_image(good)
    assert isinstance(accepted, ImageAccepted)
    [image] = client.wait(accepted.batch_id, timeout=60).images
    assert image.image_id == accepted.image_id and image.status == "done"

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(truncated_jpeg())
    failed = client.create_image(bad, wait=True, timeout=60)
    assert isinstance(failed, WaitedImage) and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "corrupt_image"
    assert failed.filename == "bad.jpg" and failed.renditions == ()


def test_file_names_travel_intact(client: Client, tmp_path: Path) -> None:
    """Quotes, backslashes and non-ASCII letters in a name reach the service as they are."""
    source = small_jpeg(700)
    names = ['été "quoted".jpg', "日本.jpg", "semi;colon=x.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(source)
    batch = client.wait(client.create_batch([tmp_path / n for n in names]).batch_id, timeout=60)
    assert sorted(image.filename for image in batch.images) == sorted(names)


def test_the_client_imports_without_the_server_libraries() -> None:
    """Only httpx, pydantic and the standard library: Pillow, FastAPI and friends blocked."""
    blocked = ["PIL", "fastapi", "starlette", "uvicorn", "redis", "pillow_heif", "typer"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import pixelmill.client as c\n"
        "print(sorted(c.__all__) == sorted(set(c.__all__)), c.Client.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "Client"]


def test_an_event_cut_short_is_dropped_and_its_id_not_resumed_from() -> None:
    """Per the SSE rules an id counts when its message is complete; a new connection drops a
    message the old one left half-read (here one with two data lines, cut between them)."""
    decoder = SSEDecoder()
    for line in ("retry: 2500", "", "id: 4", "event: image", "data: {}", ""):
        decoder.feed(line)
    assert (decoder.last_event_id, decoder.retry_ms) == ("4", 2500)
    for line in ("id: 5", "event: image", "data: first half"):
        assert decoder.feed(line) is None
    assert decoder.last_event_id == "4", "resume after the last whole event"
    decoder.start_connection()
    assert decoder.feed("") is None, "nothing of the cut message is dispatched"
    for line in (": keep-alive", "id: 5", "event: progress", "data: a", "data: b"):
        decoder.feed(line)
    assert decoder.feed("") == ServerSentEvent("progress", "a\nb", "5")


def test_the_public_names_are_exactly_these() -> None:
    """What ``from pixelmill.client import ...`` offers; everything else is private."""
    import pixelmill.client

    assert set(pixelmill.client.__all__) == {
        "AsyncClient", "Batch", "BatchAccepted", "BatchPage", "Catalogue", "Client",
        "DoneEvent", "ErrorInfo", "Event", "Image", "ImageAccepted", "ImageEvent",
        "Manifest", "PixelmillError", "PresetInfo", "ProgressEvent", "Rendition",
        "SourceInfo", "WaitedImage",
    }  # fmt: skip
    for name in pixelmill.client.__all__:
        assert getattr(pixelmill.client, name) is not None
