"""Hostile HTTP against a real uvicorn: slow, truncated and huge requests, parts by thousands.

Each test checks the answer (a 4xx in the JSON error shape, never a 500 or a reset) and that
nothing stays behind in the spool.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_helpers import assert_error, small_jpeg, small_png
from api_server import running_in_thread
from conftest import mounted_tmpfs
from pixelmill.api.app import create_app
from pixelmill.config import Settings

CLIENT_TIMEOUT_S = 2.0
MAX_UPLOAD = 4 * 1024 * 1024
MAX_BODY = 12 * 1024 * 1024
BOUNDARY = "hostile-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# How long past the client timeout the server may take to let go (a loaded machine).
SLACK_S = 15.0


def hostile_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "store": "sqlite",
        "workers": 1,
        "max_upload_bytes": MAX_UPLOAD,
        "max_batch_bytes": MAX_BODY,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-data")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    with running_in_thread(create_app(hostile_settings(data_dir))) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


def spool_entries(data_dir: Path) -> list[Path]:
    """Everything under the spool, folders included."""
    spool = data_dir / "spool"
    return sorted(spool.rglob("*")) if spool.is_dir() else []


def wait_for_empty_spool(data_dir: Path, timeout_s: float = 30.0) -> None:
    """Spooled images of accepted batches are removed as they finish: wait for that."""
    deadline = time.monotonic() + timeout_s
    while spool_entries(data_dir):
        assert time.monotonic() < deadline, spool_entries(data_dir)
        time.sleep(0.05)


def part(name: str, data: bytes, filename: str | None = "x.png") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def closing() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def host_port(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


@contextlib.contextmanager
def raw_socket(base_url: str) -> Iterator[socket.socket]:
    sock = socket.create_connection(host_port(base_url), timeout=CLIENT_TIMEOUT_S + SLACK_S)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (bounded in bytes and by the timeout)."""
    received = bytearray()
    while len(received) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def request_head(path: str, length: int, content_type: str = MULTIPART) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_twelve_thousand_tiny_parts_are_refused_fast_with_413(
    client: httpx.Client, data_dir: Path
) -> None:
    """Parts are counted as they arrive: the 10 001st file part stops the request."""
    tiny = small_png(1, (2, 2))
    body = b"".join(part("files", tiny, f"{i}.png") for i in range(12_000)) + closing()
    started = time.monotonic()
    response = client.post("/v1/batches", content=body, headers={"Content-Type": MULTIPART})
    elapsed = time.monotonic() - started
    assert_error(response, 413, "invalid_request")
    assert "10000" in response.json()["error"]["message"]
    assert elapsed < 60, elapsed
    assert spool_entries(data_dir) == []
    # The connection is still usable: the rest of the body was read, not left to reset.
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("head", "filler", "status", "code"),
    [
        # A wrong field, refused at its first part; the body is under the limit.
        (part("file", b"x"), MAX_BODY - 1024 * 1024, 400, "invalid_request"),
        # Refused by Content-Length, before any byte is read.
        (b"", MAX_BODY + 4 * 1024 * 1024, 413, "file_too_large"),
    ],
    ids=["wrong-field", "declared-too-big"],
)
def test_an_early_answer_reaches_a_client_still_sending(
    client: httpx.Client, data_dir: Path, head: bytes, filler: int, status: int, code: str
) -> None:
    """A client sending a big body gets the JSON error, not a connection reset."""
    body = head + part("files", b"GIF89a" + b"\0" * filler) + closing()
    for _ in range(2):  # twice on one kept-alive connection
        response = client.post("/v1/batches", content=body, headers={"Content-Type": MULTIPART})
        assert_error(response, status, code)
    assert client.get("/healthz").status_code == 200
    assert spool_entries(data_dir) == []


def test_a_body_too_big_to_drain_is_answered_then_closed(base_url: str) -> None:
    """Past the drain bound the answer still arrives (Connection: close), then the close."""
    with raw_socket(base_url) as sock:
        sock.sendall(request_head("/v1/batches", 5 * 1024 * 1024 * 1024))
        sock.settimeout(CLIENT_TIMEOUT_S + SLACK_S)
        chunk = b"\0" * 65536
        answer = b""
        with contextlib.suppress(OSError):
            for _ in range(2000):  # up to 128 MiB: more than the server drains
                sock.sendall(chunk)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"file_too_large"' in answer


def test_a_client_that_stops_mid_body_is_dropped_and_its_spool_file_removed(
    base_url: str, data_dir: Path
) -> None:
    body = part("files", small_jpeg(5)) + part("files", b"\xff\xd8\xff\xe0" + b"\0" * 10_000)
    with raw_socket(base_url) as sock:
        sock.sendall(request_head("/v1/batches", len(body) + 50_000) + body)
        started = time.monotonic()
        answer = read_until_closed(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"invalid_request"' in answer and b"connection: close" in answer.lower()
    assert CLIENT_TIMEOUT_S - 0.5 <= waited < CLIENT_TIMEOUT_S + SLACK_S
    assert spool_entries(data_dir) == []


def test_a_client_that_stops_mid_headers_is_disconnected(base_url: str) -> None:
    with raw_socket(base_url) as sock:
        sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        started = time.monotonic()
        answer = read_until_closed(sock)
        waited = time.monotonic() - started
    assert answer == b""
    assert CLIENT_TIMEOUT_S - 0.5 <= waited < CLIENT_TIMEOUT_S + SLACK_S


def test_a_silent_connection_is_disconnected(base_url: str) -> None:
    with raw_socket(base_url) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < CLIENT_TIMEOUT_S + SLACK_S


def test_a_truncated_body_leaves_nothing(base_url: str, data_dir: Path) -> None:
    """The client declares more than it sends, then hangs up: nothing stays spooled."""
    body = part("files", small_jpeg(6)) + part("files", small_jpeg(7))
    with raw_socket(base_url) as sock:
        sock.sendall(request_head("/v1/batches", len(body) * 2) + body)
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    deadline = time.monotonic() + CLIENT_TIMEOUT_S + SLACK_S
    while spool_entries(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_entries(data_dir) == []


@pytest.mark.parametrize("size", [70 * 1024, 1024 * 1024])
def test_huge_headers_are_a_4xx(client: httpx.Client, size: int) -> None:
    response = client.get("/healthz", headers={"X-Huge": "a" * size})
    assert_error(response, 431, "invalid_request")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (part("files", small_png(3), filename=None) + closing(), "with a filename"),
        (
            part("files", small_png(4))
            + part("callback_url", b"http://a.example/", None)
            + part("callback_url", b"http://b.example/", None)
            + closing(),
            "more than once",
        ),
        (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=files; filename=a.png\r\n"
            f"X-Pad: {'p' * 20_000}\r\n\r\n".encode()
            + small_png(5)
            + b"\r\n"
            + closing(),
            "header",
        ),
        (part("files", b"not an image") + part("extra", b"1", None) + closing(), "unexpected"),
    ],
    ids=["no-filename", "repeated-field", "huge-part-header", "refused-after-a-non-image"],
)
def test_malformed_parts_are_400_and_leave_no_spool_folder(
    client: httpx.Client, data_dir: Path, body: bytes, message: str
) -> None:
    response = client.post("/v1/batches", content=body, headers={"Content-Type": MULTIPART})
    assert_error(response, 400, "invalid_request")
    assert message in response.json()["error"]["message"]
    assert spool_entries(data_dir) == []


def test_a_batch_refused_by_first_bytes_leaves_no_spool_folder(
    client: httpx.Client, data_dir: Path
) -> None:
    response = client.post("/v1/images", files={"file": ("t.txt", b"plain text", "text/plain")})
    assert response.status_code == 202
    assert spool_entries(data_dir) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for this test: a data dir that fills up for real."""
    with mounted_tmpfs(tmp_path / "small-disk", 3) as folder:
        yield folder


def test_an_upload_that_fills_the_disk_is_507_and_leaves_nothing(small_disk: Path) -> None:
    data_dir = small_disk / "data"
    settings = hostile_settings(data_dir, max_upload_bytes=8 * 1024 * 1024)
    big = b"\xff\xd8\xff\xe0" + b"\0" * (4 * 1024 * 1024)
    with (
        running_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        for _ in range(2):  # the connection survives the early answer
            response = client.post("/v1/batches", files=[("files", ("big.jpg", big))])
            assert_error(response, 507, "insufficient_storage")
        assert [p for p in spool_entries(data_dir) if p.is_file()] == []
        # Space is back (nothing was kept): a normal upload goes through.
        ok = client.post("/v1/images?wait=true", files={"file": ("s.jpg", small_jpeg(9))})
        assert ok.status_code == 200, ok.text
    assert spool_entries(data_dir) == []


def test_ranges_of_a_rendition_answer_206_or_a_json_error(client: httpx.Client) -> None:
    record = client.post("/v1/images?wait=true", files={"file": ("r.jpg", small_jpeg(11))})
    assert record.status_code == 200, record.text
    path = f"/v1/images/{record.json()['sha256']}/thumbnail.jpg"
    assert client.get(path, headers={"Range": "bytes=0-9"}).status_code == 206
    assert_error(client.get(path, headers={"Range": "bytes=zz"}), 400, "invalid_request")
    beyond = client.get(path, headers={"Range": "bytes=99999999-"})
    assert_error(beyond, 416, "invalid_request")
    assert beyond.headers["content-range"].startswith("bytes */")


def test_connections_over_the_cap_are_answered_503(tmp_path: Path) -> None:
    """PIXELMILL_MAX_CONNECTIONS bounds what idle or slow clients can hold at once."""
    settings = hostile_settings(tmp_path / "data", max_connections=3)
    with running_in_thread(create_app(settings)) as url:
        with contextlib.ExitStack() as held:
            for _ in range(3):
                held.enter_context(raw_socket(url))
            time.sleep(0.5)  # let the server accept them
            assert httpx.get(f"{url}/healthz", timeout=30).status_code == 503
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/healthz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the held connections were never let go"
            time.sleep(0.1)
