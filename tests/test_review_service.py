"""Review of the service, stores, progress and webhooks: the defects found, each kept out."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from api_helpers import read_sse, small_jpeg, upload, wait_for_batch
from api_server import app_client
from pixelmill.api.events import batch_events, parse_last_event_id
from pixelmill.api.service import BatchService
from pixelmill.api.webhooks import AddressPolicy, CallbackRefused, WebhookSender, redact_url
from pixelmill.config import Settings
from pixelmill.states import ImageStatus
from pixelmill.store import NewImage, open_store
from pixelmill.store.redis import RedisBatchStore
from test_faults_redis import ThrowawayRedis, throwaway_redis  # noqa: F401 (a fixture)
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
    # The batch's own last id (done's) is the end: 204, nothing more to send.
    again = client.get(f"/v1/batches/{batch_id}/events", headers={"Last-Event-ID": str(ids[-1])})
    assert again.status_code == 204


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


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("http://[64:ff9b::a00:1]/hook", "private"),  # NAT64 of 10.0.0.1
        ("http://[64:ff9b::7f00:1]/hook", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/hook", "link-local"),  # NAT64 of 169.254.169.254
        ("http://[2002:a9fe:a9fe::1]/hook", "link-local"),  # 6to4 of 169.254.169.254
        ("http://[2002:c0a8:101::1]/hook", "private"),  # 6to4 of 192.168.1.1
    ],
)
def test_ipv6_forms_embedding_a_forbidden_ipv4_address_are_refused(url: str, what: str) -> None:
    """A NAT64 gateway connects to the IPv4 address in the last 32 bits: these passed."""
    with pytest.raises(CallbackRefused) as refused:
        AddressPolicy().resolve(url)
    assert what in refused.value.message
    if what == "link-local":
        with pytest.raises(CallbackRefused):
            AddressPolicy(allow_private=True).resolve(url)


def test_ipv6_forms_embedding_a_public_address_pass() -> None:
    assert AddressPolicy().resolve("http://[64:ff9b::808:808]/") == ["64:ff9b::808:808"]
    assert AddressPolicy().resolve("http://[2002:808:808::1]/") == ["2002:808:808::1"]


def test_a_password_holding_an_at_sign_never_reaches_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """URL parsers split the authority at its last '@': the password's tail was logged."""
    url = "http://hook-user:pass@w0rd-tail@127.0.0.1:9/hook"
    assert redact_url(url) == "http://***@127.0.0.1:9/hook"
    caplog.set_level(logging.DEBUG)
    sender = WebhookSender(None, attempts=1, timeout_s=1, allow_private=True)
    try:
        assert sender.deliver(url, b"{}") is False  # nothing listens on port 9
    finally:
        sender.close()
    assert "127.0.0.1:9/hook" in caplog.text and "w0rd-tail" not in caplog.text


def test_a_host_that_does_not_resolve_at_send_time_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DNS failure when the batch finishes was taken as a refusal: the callback was
    dropped at once, never retried, its marker deleted. (A label over 63 characters fails
    in the resolver's encoder, so no query leaves the machine.)"""
    url = "http://" + "a" * 64 + ".example/hook"
    caplog.set_level(logging.WARNING)
    sender = WebhookSender(None, attempts=3, backoff_s=0.01, allow_private=True)
    try:
        assert sender.deliver(url, b"{}") is False
    finally:
        sender.close()
    attempts = [r for r in caplog.records if "does not resolve" in r.getMessage()]
    assert len(attempts) == 3, caplog.text


def test_an_id_past_an_unfinished_batchs_version_does_not_hide_the_next_image(
    tmp_path: Path,
) -> None:
    """Resuming an unfinished batch after ``version + 1`` (an id it never sent) skipped the
    image that next finished: that image takes exactly ``version + 1``."""
    store = open_store("sqlite", tmp_path)
    images = [NewImage(f"{i}" * 32, f"{i}.jpg", "a" * 64, None) for i in range(2)]
    batch = store.create_batch("d" * 32, images)

    async def read_all() -> list[tuple[str, int | None]]:
        frames: list[tuple[str, int | None]] = []
        with anyio.fail_after(15):  # without the fix: the first image never comes
            async for frame in batch_events(store, batch.batch_id, None, batch.version + 1):
                fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
                if "event" in fields:
                    frames.append((fields["event"], int(fields["id"]) if "id" in fields else None))
                    if [name for name, _ in frames].count("image") == 1 and fields[
                        "event"
                    ] == "image":
                        store.finish_image(batch.batch_id, "1" * 32, ImageStatus.DONE)
        return frames

    def finish_first_soon() -> None:
        time.sleep(0.5)  # the stream is waiting for a change by now
        store.finish_image(batch.batch_id, "0" * 32, ImageStatus.DONE)

    worker = threading.Thread(target=finish_first_soon)
    worker.start()
    try:
        frames = anyio.run(read_all)
    finally:
        worker.join()
        store.close()
    assert [name for name, _ in frames].count("image") == 2, frames
    assert frames[-1][0] == "done"


def test_a_redis_wait_after_close_does_not_spin(
    throwaway_redis: ThrowawayRedis,  # noqa: F811 (the fixture imported above)
) -> None:
    """A waiter after close() (a ?wait request or an event stream still running while the
    service stops) re-read the version in a tight loop: ~6,500 HGETs a second."""
    store = RedisBatchStore(throwaway_redis.url, prefix="review:")
    batch = store.create_batch("e" * 32, [NewImage("f" * 32, "a.jpg", "a" * 64, None)])
    store.close()
    admin = redis.Redis.from_url(throwaway_redis.url)
    try:

        def reads() -> int:
            stats: dict[str, Any] = admin.info("commandstats")
            return int(stats.get("cmdstat_hget", {}).get("calls", 0))

        before = reads()
        started = time.monotonic()
        assert store.wait_for_change(batch.batch_id, batch.version, 1.5) == batch.version
        assert time.monotonic() - started >= 1.4
        assert reads() - before <= 10
    finally:
        admin.close()


@contextmanager
def keep_alive_receiver() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """An HTTP/1.1 receiver on 127.0.0.1 keeping connections open: records (Host, client
    port) per request, so a request sent on another request's connection shows."""
    seen: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((self.headers["Host"], self.client_address[1]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_connection_to_a_pinned_address_is_not_reused_for_another_host() -> None:
    """Connections were pooled by the pinned IP: a callback to another host name resolving
    to the same address went over the first one's connection (for https: its TLS session,
    so the second name's certificate was never checked)."""
    sender = WebhookSender(None, attempts=1, allow_private=True)
    try:
        with keep_alive_receiver() as (address, seen):
            port = address.rpartition(":")[2]
            for host in ("127.0.0.1", "localhost", "127.0.0.1"):
                assert sender.deliver(f"http://{host}:{port}/hook", b"{}")
    finally:
        sender.close()
    assert len(seen) == 3
    assert len({client_port for _, client_port in seen}) == 3, seen
