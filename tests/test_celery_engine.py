"""The celery engine with real parts: a real service, real ``pixelmill worker`` processes,
Redis or RabbitMQ as the broker, the Redis store, a shared storage folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import (
    check_invariant,
    read_events,
    slow_jpeg,
    small_jpeg,
    upload,
    wait_for_batch,
)
from api_server import ServerProcess, app_client
from celery_helpers import (
    Broker,
    celery_env,
    celery_workers,
    cleanup_celery,
    start_worker,
)
from pixelmill.config import Settings
from webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a process with ``env`` would read."""
    values = {k.removeprefix("PIXELMILL_").lower(): v for k, v in env.items()}
    return Settings(**values)


@pytest.fixture
def redis_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = celery_env("redis", tmp_path)
    yield env
    cleanup_celery(env)


@pytest.fixture(params=["redis", "amqp"])
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    broker: Broker = request.param
    env = celery_env(broker, tmp_path)
    yield env
    cleanup_celery(env)


@contextmanager
def service(env: dict[str, str]) -> Iterator[httpx.Client]:
    with app_client(settings_of(env)) as client:
        yield client


def rendered_folders(env: dict[str, str]) -> list[Path]:
    """Image folders holding a manifest in the shared storage."""
    root = Path(env["PIXELMILL_STORAGE"].removeprefix("file://"))
    return sorted(p.parent for p in (root / "renditions").glob("*/*/manifest.json"))


def originals(env: dict[str, str]) -> list[Path]:
    root = Path(env["PIXELMILL_STORAGE"].removeprefix("file://"))
    folder = root / "originals"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def photos(corpus: Path, count: int) -> list[tuple[str, bytes]]:
    files = sorted(
        p for p in (corpus / "photos").iterdir() if p.suffix.lower() in (".jpg", ".jpeg")
    )
    return [(p.name, p.read_bytes()) for p in files[:count]]


def test_a_batch_of_photos_is_rendered_by_two_workers(
    any_env: dict[str, str], corpus: Path
) -> None:
    """Progress, SSE and the invariant as with the local engine; originals gone after."""
    images = photos(corpus, 6)
    with celery_workers(any_env, count=2) as workers, service(any_env) as client:
        health = client.get("/healthz").json()
        assert health["engine_kind"] == "celery" and health["engine"] == "ok", health
        files = [upload(name, data) for name, data in images]
        files += [upload("same.jpg", images[0][1]), upload("bad.jpg", b"not an image")]
        created = client.post("/v1/batches", files=files)
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch_id"]
        events = read_events(client, batch_id)
        status = wait_for_batch(client, batch_id)
        assert status["status"] == "completed", status
        assert status["total"] == 8 and status["failed"] == 1
        assert status["completed"] == 7 and status["duplicates"] == 1, status
        assert events[-1][0] == "done"
        assert sum(1 for name, _ in events if name == "image") == 8
        for image in status["images"]:
            if image["status"] == "done":
                path = image["renditions"][0]["path"]
                assert client.get(path).status_code == 200
        assert len(rendered_folders(any_env)) == 6
        # Both workers took part? not guaranteed with 6 quick images; each answers ping.
        assert client.get("/healthz").json()["workers"] == len(workers)
        metrics = client.get("/metrics").text
        assert 'pixelmill_images_total{status="done"} 6.0' in metrics, metrics
    deadline = time.monotonic() + 10
    while originals(any_env) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert originals(any_env) == []
    assert not list((Path(any_env["PIXELMILL_DATA_DIR"]) / "spool").rglob("*.*"))
