"""Helpers for the API tests: generated uploads, invariant-checking polls, an SSE reader."""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

FINAL_BATCH_STATUSES = ("completed", "cancelled")
Upload = tuple[str, tuple[str, bytes, str]]


def small_jpeg(seed: int, size: tuple[int, int] = (240, 160)) -> bytes:
    """A small, quick-to-render JPEG whose bytes differ for every seed."""
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, size[0] // 3, size[1] // 2), fill=(230, 40, 40))
    draw.point((seed % size[0], seed // size[0] % size[1]), fill=(1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def small_png(seed: int, size: tuple[int, int] = (200, 120)) -> bytes:
    image = Image.new("RGBA", size, (seed // 256 % 256, seed % 256, 200, 128))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def slow_jpeg(seed: int, size: tuple[int, int] = (1800, 1200)) -> bytes:
    """Noise: cheap to make, slow to encode as WebP, so a batch of these takes a while."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG cut in half: right magic bytes, damaged data (corrupt_image)."""
    data = small_jpeg(999, (300, 200))
    return data[: len(data) // 2]


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> Upload:
    return ("files", (name, data, content_type))


def check_invariant(status: dict[str, Any]) -> None:
    """completed + failed + cancelled + pending == total, and duplicates within completed."""
    counted = status["completed"] + status["failed"] + status["cancelled"] + status["pending"]
    assert counted == status["total"], status
    assert 0 <= status["duplicates"] <= status["completed"], status
    if "images" in status:
        assert len(status["images"]) == status["total"]
        by_status = [image["status"] for image in status["images"]]
        assert status["failed"] == by_status.count("failed"), status
        assert status["duplicates"] == by_status.count("duplicate"), status


def wait_for_batch(
    client: httpx.Client, batch_id: str, timeout_s: float = 60.0, interval_s: float = 0.05
) -> dict[str, Any]:
    """Poll until the batch is finished, checking the invariant at every poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        check_invariant(status)
        if status["status"] in FINAL_BATCH_STATUSES and status["pending"] == 0:
            return status
        assert time.monotonic() < deadline, f"batch not finished in {timeout_s}s: {status}"
        time.sleep(interval_s)


def read_events(
    client: httpx.Client, batch_id: str, timeout_s: float = 60.0
) -> list[tuple[str, dict[str, Any]]]:
    """Every SSE event of a batch's stream, until the server closes it after ``done``."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    with client.stream("GET", f"/v1/batches/{batch_id}/events", timeout=timeout_s) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def spool_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "spool").rglob("*") if p.is_file()]


def temp_files(data_dir: Path) -> list[Path]:
    return list(data_dir.rglob(".pixelmill-tmp-*"))


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """A 4xx in the JSON error shape of DESIGN.md."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def read_sse(
    client: httpx.Client,
    batch_id: str,
    *,
    last_event_id: str | None = None,
    stop_after_images: int | None = None,
    timeout_s: float = 60.0,
) -> tuple[list[tuple[str | None, str, dict[str, Any]]], list[str]]:
    """A batch's SSE stream as ``(id, event, data)`` triples, plus its ``retry:`` values.

    Reconnects like a browser when ``last_event_id`` is given; with ``stop_after_images``
    the connection is dropped once that many ``image`` events were read.
    """
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    events: list[tuple[str | None, str, dict[str, Any]]] = []
    retries: list[str] = []
    event_id: str | None = None
    name = "message"
    url = f"/v1/batches/{batch_id}/events"
    with client.stream("GET", url, headers=headers, timeout=timeout_s) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("retry: "):
                retries.append(line.removeprefix("retry: "))
            elif line.startswith("id: "):
                event_id = line.removeprefix("id: ")
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event_id, name, json.loads(line.removeprefix("data: "))))
                event_id, name = None, "message"
                images = sum(1 for _, n, _ in events if n == "image")
                if stop_after_images is not None and images >= stop_after_images:
                    break
    return events, retries


def wait_for_empty_spool(data_dir: Path, timeout_s: float = 15.0) -> None:
    """Spool files go right after their outcome is stored, a moment after the batch reads
    finished (and after an image still stopping when its batch was cancelled)."""
    deadline = time.monotonic() + timeout_s
    while left := spool_files(data_dir):
        assert time.monotonic() < deadline, f"spool files left: {left}"
        time.sleep(0.05)
