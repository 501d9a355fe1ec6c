"""Review of the HTTP edge: slow clients that never go quite silent, and what they hold.

A real uvicorn (configured as ``pixelmill serve`` configures it) on 127.0.0.1, raw sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_helpers import small_jpeg
from api_server import running_in_thread
from pixelmill.api.app import create_app
from test_api_hostile import (
    CLIENT_TIMEOUT_S,
    SLACK_S,
    hostile_settings,
    part,
    raw_socket,
    request_head,
    spool_entries,
)

# A drip this slow never leaves a whole client timeout of silence.
DRIP_EVERY_S = CLIENT_TIMEOUT_S / 4
# How long a dripping client is kept up, at most, before the test gives up on the server.
DRIP_FOR_S = CLIENT_TIMEOUT_S + SLACK_S + 10


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge-data")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    with running_in_thread(create_app(hostile_settings(data_dir))) as url:
        yield url


def drip_until_answered(sock: socket.socket) -> tuple[bytes, float]:
    """Send one byte every DRIP_EVERY_S until the server answers or closes; (answer, s)."""
    started = time.monotonic()
    answer = b""
    sock.settimeout(DRIP_EVERY_S)
    while time.monotonic() - started < DRIP_FOR_S:
        try:
            sock.sendall(b"\0")
        except OSError:
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
        if b"\r\n\r\n" in answer:
            break
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    "head",
    [
        # An image part being spooled: the upload reader's pace.
        part("files", small_jpeg(1))[:-2] + part("files", b"\xff\xd8\xff\xe0")[:-2],
        # A part refused at once (unknown field): the drain's pace.
        part("nope", b"x")[:-2],
    ],
    ids=["spooling", "draining"],
)
def test_a_client_dripping_its_body_is_answered_408_and_leaves_nothing(
    base_url: str, data_dir: Path, head: bytes
) -> None:
    """A byte every half timeout is never silence, but far under the minimum pace: the
    client gets its 408 (or its early answer) about one timeout in, not after days."""
    with raw_socket(base_url) as sock:
        sock.sendall(request_head("/v1/batches", len(head) + 10_000_000) + head)
        answer, waited = drip_until_answered(sock)
    assert answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), (answer[:200], waited)
    assert b"connection: close" in answer.lower()
    assert waited < CLIENT_TIMEOUT_S + SLACK_S
    deadline = time.monotonic() + SLACK_S
    while spool_entries(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_entries(data_dir) == []
