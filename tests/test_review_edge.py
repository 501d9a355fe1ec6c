"""Review of the HTTP edge: slow clients that never go quite silent, and what they hold.

A real uvicorn (configured as ``pixelmill serve`` configures it) on 127.0.0.1, raw sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import test_api_hostile
import test_faults_redis
from api_helpers import assert_error, slow_jpeg, small_jpeg, upload
from api_server import app_client, free_port, running_in_thread
from pixelmill.api.app import create_app
from test_api_hostile import (
    CLIENT_TIMEOUT_S,
    MAX_BODY,
    MULTIPART,
    SLACK_S,
    hostile_settings,
    part,
    raw_socket,
    request_head,
    spool_entries,
)
from test_faults_redis import ThrowawayRedis

throwaway_redis = test_faults_redis.throwaway_redis  # the fixture, shared

# A drip this slow never leaves a whole client timeout of silence.
DRIP_EVERY_S = CLIENT_TIMEOUT_S / 4
# How long a dripping client is kept up, at most, before the test gives up on the server.
DRIP_FOR_S = CLIENT_TIMEOUT_S + SLACK_S + 10


# The hostile tests' module-scoped service (a fresh one for this module).
data_dir = test_api_hostile.data_dir
base_url = test_api_hostile.base_url


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


# -- every status a route answers is in /openapi.json, the store being down included -------


def _listed(schema: dict[str, Any], method: str, path: str, status: int) -> bool:
    return str(status) in schema["paths"][path][method]["responses"]


def test_every_route_lists_the_503_it_answers_while_the_store_is_down(
    throwaway_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """Redis stopped: each /v1 route that needs the store answers 503 'unavailable', and
    that status, with the JSON error body, is in the route's entry of /openapi.json."""
    settings = hostile_settings(tmp_path / "data", store=throwaway_redis.url)
    with app_client(settings) as client:
        made = client.post("/v1/batches", files=[upload("a.jpg", small_jpeg(1))])
        assert made.status_code == 202, made.text
        batch = made.json()["batch_id"]
        schema = client.get("/openapi.json").json()
        throwaway_redis.shut_down()
        calls = [
            ("post", "/v1/images", "/v1/images", {"files": {"file": ("b.jpg", small_jpeg(2))}}),
            ("post", "/v1/batches", "/v1/batches", {"files": [upload("c.jpg", small_jpeg(3))]}),
            ("get", f"/v1/batches/{batch}", "/v1/batches/{batch_id}", {}),
            ("get", f"/v1/batches/{batch}/events", "/v1/batches/{batch_id}/events", {}),
            ("post", f"/v1/batches/{batch}/cancel", "/v1/batches/{batch_id}/cancel", {}),
        ]
        unlisted = []
        for method, url, path, options in calls:
            response = client.request(method.upper(), url, **options)  # type: ignore[arg-type]
            assert response.status_code == 503, (url, response.status_code, response.text)
            assert response.json()["error"]["code"] == "unavailable"
            if not _listed(schema, method, path, 503):
                unlisted.append(f"{method.upper()} {path}")
        assert unlisted == []


def test_a_waited_upload_whose_batch_is_deleted_answers_a_listed_404(tmp_path: Path) -> None:
    """``POST /v1/images?wait=true``: its batch (found through the listing) deleted during
    the wait, the answer is the cancelled image or 404 ``not_found``, statuses the operation
    lists."""
    with app_client(hostile_settings(tmp_path / "data")) as client:
        # The one worker is busy with this batch, so the waited image stays queued.
        busy = [upload(f"busy{i}.jpg", slow_jpeg(i)) for i in range(4)]
        blocker = client.post("/v1/batches", files=busy)
        assert blocker.status_code == 202, blocker.text
        answers: list[httpx.Response] = []

        def upload_and_wait() -> None:
            files = {"file": ("waited.jpg", small_jpeg(5))}
            answers.append(client.post("/v1/images?wait=true&timeout=60", files=files))

        waiter = threading.Thread(target=upload_and_wait)
        waiter.start()
        deadline = time.monotonic() + 30
        newest = blocker.json()["batch_id"]
        while newest == blocker.json()["batch_id"] and time.monotonic() < deadline:
            time.sleep(0.05)
            newest = client.get("/v1/batches?limit=1").json()["batches"][0]["batch_id"]
        assert client.delete(f"/v1/batches/{newest}").status_code == 204
        waiter.join(60)
        client.post(f"/v1/batches/{blocker.json()['batch_id']}/cancel")
        # The delete cancels the batch, then forgets it: the wait ends on whichever it sees
        # first, the image cancelled (200) or the batch gone (404); both are listed.
        if answers[0].status_code == 200:
            assert answers[0].json()["status"] == "cancelled", answers[0].text
        else:
            assert_error(answers[0], 404, "not_found")
        assert _listed(client.get("/openapi.json").json(), "post", "/v1/images", 404)


@pytest.mark.parametrize(
    "digits",
    ["\u0662\u0660\u0662\u0666", "\uff12\uff10\uff12\uff16", "\u09e8\u09e6\u09e8\u09ec"],
)
def test_a_cursor_in_another_scripts_digits_is_400(base_url: str, digits: str) -> None:
    """Arabic-Indic, fullwidth, Bengali digits are digits to ``\\d``: not to the cursor."""
    cursor = f"{digits}-01-01T00:00:00.000Z_" + "0" * 32
    answer = httpx.get(f"{base_url}/v1/batches", params={"cursor": cursor}, timeout=30)
    assert_error(answer, 400, "invalid_request")


def test_a_data_dir_that_cannot_be_made_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """``pixelmill serve`` with PIXELMILL_DATA_DIR under a file: a failed start (exit 3)
    saying why in one line, not a 48-line traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "PIXELMILL_DATA_DIR": str(blocker / "data"), "PIXELMILL_WORKERS": "1"}
    args = [sys.executable, "-m", "pixelmill", "serve", "--port", str(free_port())]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot start: NotADirectoryError: [Errno 20] Not a directory: '{blocker}" in (
        done.stderr
    )


@pytest.mark.parametrize(
    ("length", "content_type", "status"),
    [(MAX_BODY + 1, MULTIPART, 413), (1000, "application/octet-stream", 400)],
    ids=["too-long", "not-multipart"],
)
def test_a_client_waiting_for_100_continue_is_refused_without_sending_its_body(
    base_url: str, length: int, content_type: str, status: int
) -> None:
    """``Expect: 100-continue`` (curl's way for bodies over 1 MB) and headers that rule the
    body out: the answer comes at once, not a "100 Continue" inviting the whole body."""
    head = request_head("/v1/batches", length, content_type)
    with raw_socket(base_url) as sock:
        sock.sendall(head[:-2] + b"Expect: 100-continue\r\n\r\n")
        # Without the early answer, the first bytes would be "HTTP/1.1 100 Continue".
        sock.settimeout(SLACK_S)
        answer = sock.recv(65536)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"connection: close" in answer.lower()


def test_the_connection_cap_serves_exactly_max_connections(tmp_path: Path) -> None:
    """PIXELMILL_MAX_CONNECTIONS=2: with one other connection open, a request is served
    (two open: at the cap, not over it); with two others open, it is 503 'unavailable' in
    the JSON error shape, with Retry-After."""
    settings = hostile_settings(tmp_path / "data", max_connections=2)
    with running_in_thread(create_app(settings)) as url, contextlib.ExitStack() as held:
        held.enter_context(raw_socket(url))
        time.sleep(0.5)  # let the server accept it
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        held.enter_context(raw_socket(url))
        time.sleep(0.5)
        refused = httpx.get(f"{url}/healthz", timeout=30)
        assert_error(refused, 503, "unavailable")
        assert refused.headers["retry-after"].isdigit()
        assert refused.headers["connection"] == "close"
