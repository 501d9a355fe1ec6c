"""The celery engine with real parts: a real service, real ``pixelmill worker`` processes,
Redis or RabbitMQ as the broker, the Redis store, a shared storage folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_helpers import (
    check_invariant,
    read_events,
    slow_jpeg,
    small_jpeg,
    upload,
    wait_for_batch,
)
from celery_helpers import (
    Broker,
    celery_env,
    celery_workers,
    cleanup_celery,
    service,
)
from pixelmill.core.specs import Limits, OutputFormat, Preset, RenderSpec
from pixelmill.engine.celery_app import redact_url, spec_from_dict, spec_to_dict
from pixelmill.store import NewImage, RedisBatchStore
from s3_server import S3Server
from webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow


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


def test_one_image_waited_for_comes_back_final(redis_env: dict[str, str]) -> None:
    with celery_workers(redis_env), service(redis_env) as client:
        response = client.post("/v1/images?wait=true", files=[("file", ("a.jpg", small_jpeg(5)))])
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "done"
        assert client.get(response.json()["renditions"][0]["path"]).status_code == 200


def test_cancel_stops_30_queued_images_from_rendering(any_env: dict[str, str]) -> None:
    """One worker busy with a slow image, 30 behind it: after the cancel none of them renders
    and the batch ends cancelled with exact counts."""
    files = [upload("slow.jpg", slow_jpeg(1))]
    files += [upload(f"{i}.jpg", small_jpeg(100 + i)) for i in range(30)]
    with celery_workers(any_env, concurrency=1), service(any_env) as client:
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/batches/{batch_id}").json()["images"][0]["status"] == "pending":
            assert time.monotonic() < deadline, "the slow image never started"
            time.sleep(0.02)
        cancelled = client.post(f"/v1/batches/{batch_id}/cancel").json()
        check_invariant(cancelled)
        status = wait_for_batch(client, batch_id)
        assert status["status"] == "cancelled"
        assert status["cancelled"] >= 30 and status["pending"] == 0, status
        assert status["completed"] + status["cancelled"] == 31, status
        slow = status["images"][0]
        # Renders counted by their manifests: at most the slow one, if it beat the cancel.
        assert len(rendered_folders(any_env)) == (1 if slow["status"] == "done" else 0)
        assert all(i["status"] == "cancelled" for i in status["images"][1:])
        # The worker still takes each message off the queue and lets go of its original.
        deadline = time.monotonic() + 30
        while originals(any_env) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert originals(any_env) == []
        assert len(rendered_folders(any_env)) == (1 if slow["status"] == "done" else 0)


def test_the_same_bytes_uploaded_ten_times_at_once_render_once(any_env: dict[str, str]) -> None:
    """Two batches, two workers, ten copies: one claim wins, every record points at it."""
    data = slow_jpeg(7, (900, 600))
    with celery_workers(any_env, count=2), service(any_env) as client:
        ids = [
            client.post(
                "/v1/batches", files=[upload(f"copy-{b}-{i}.jpg", data) for i in range(5)]
            ).json()["batch_id"]
            for b in range(2)
        ]
        statuses = [wait_for_batch(client, batch_id) for batch_id in ids]
        metrics = client.get("/metrics").text
    images = [image for status in statuses for image in status["images"]]
    assert [i["status"] for i in images].count("done") == 1, images
    assert [i["status"] for i in images].count("duplicate") == 9
    assert len({json.dumps(i["renditions"], sort_keys=True) for i in images}) == 1
    assert len(rendered_folders(any_env)) == 1
    assert 'pixelmill_images_total{status="done"} 1.0' in metrics
    assert 'pixelmill_images_total{status="duplicate"} 9.0' in metrics


def test_a_batch_finished_while_the_service_was_down_gets_its_callback_at_restart(
    redis_env: dict[str, str],
) -> None:
    """The worker finishes the batch with no service running; the next service sends the
    webhook the store recorded as owed, once."""
    store = RedisBatchStore(
        redis_env["PIXELMILL_STORE"], prefix=redis_env["PIXELMILL_REDIS_PREFIX"]
    )
    with webhook_receiver() as receiver:
        with service(redis_env) as client:
            files = [upload("a.jpg", slow_jpeg(3)), upload("b.jpg", small_jpeg(4))]
            created = client.post("/v1/batches", files=files, data={"callback_url": receiver.url})
            batch_id = created.json()["batch_id"]
        # The service is stopped; its images wait in the broker for a worker.
        with celery_workers(redis_env):
            deadline = time.monotonic() + 30
            while (batch := store.get_batch(batch_id)) is None or not batch.is_finished:
                assert time.monotonic() < deadline, "the worker did not finish the batch"
                time.sleep(0.05)
        assert receiver.calls == []
        assert store.owed_callbacks() == [batch_id]
        with service(redis_env):
            calls = receiver.wait_for(1)
            deadline = time.monotonic() + 10
            while store.owed_callbacks() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert store.owed_callbacks() == []
            time.sleep(1.0)  # a few watcher rounds: nothing is sent twice
    store.close()
    assert len(calls) == 1 and len(receiver.calls) == 1
    body = json.loads(calls[0].body)
    assert body["batch_id"] == batch_id and body["status"] == "completed"
    assert body["completed"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"PIXELMILL_STORE": "sqlite"}, "PIXELMILL_STORE=redis"),
        ({"PIXELMILL_BROKER_URL": ""}, "PIXELMILL_BROKER_URL"),
        ({"PIXELMILL_ENGINE": "local"}, "PIXELMILL_ENGINE=celery"),
    ],
)
def test_a_worker_with_settings_that_cannot_work_says_so_in_one_line(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    env = {
        **os.environ,
        "PIXELMILL_ENGINE": "celery",
        "PIXELMILL_BROKER_URL": "redis://127.0.0.1:6379/0",
        "PIXELMILL_STORE": "redis://127.0.0.1:6379/0",
        "PIXELMILL_DATA_DIR": str(tmp_path),
        **extra,
    }
    if not env["PIXELMILL_BROKER_URL"]:
        del env["PIXELMILL_BROKER_URL"]
    for command in (
        (["worker"], ["serve"]) if extra.get("PIXELMILL_ENGINE") != "local" else (["worker"],)
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pixelmill", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def test_health_and_metrics_report_the_broker_queue_and_live_workers(
    any_env: dict[str, str],
) -> None:
    """Images wait in the broker (the service holds none of them) until a worker comes."""
    with service(any_env) as client:
        health = client.get("/healthz").json()
        assert health["engine_kind"] == "celery" and health["status"] == "ok", health
        assert health["workers"] == 0 and health["queued"] == 0
        files = [upload(f"{i}.jpg", small_jpeg(40 + i)) for i in range(3)]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["queued"] != 3:
            assert time.monotonic() < deadline, client.get("/healthz").json()
            time.sleep(0.1)
        assert "pixelmill_queue_depth 3.0" in client.get("/metrics").text
        assert originals(any_env) != [], "the originals wait in storage, not in the spool"
        with celery_workers(any_env):
            assert wait_for_batch(client, batch_id)["completed"] == 3


def test_with_s3_storage_workers_share_nothing_but_broker_store_and_bucket(
    redis_env: dict[str, str], s3_server: S3Server, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker has its own empty data dir, the service another: renditions and originals
    travel through the bucket only, and nothing is left behind in any data dir."""
    bucket = s3_server.new_bucket()
    env = {**redis_env, **s3_server.env(bucket, "pm")}
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)  # the service runs in this process
    images = photos(corpus, 4)
    files = [upload(name, data) for name, data in images] + [upload("again.jpg", images[0][1])]
    with celery_workers(env, count=2) as workers, service(env) as client:
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        status = wait_for_batch(client, batch_id)
        assert (status["completed"], status["duplicates"], status["failed"]) == (5, 1, 0)
        first = status["images"][0]["renditions"][0]["path"]
        assert client.get(first).status_code == 200
        worker_dirs = [Path(w.log_path).parent for w in workers]
    keys = s3_server.keys(bucket, "pm/")
    assert len([k for k in keys if k.endswith("/manifest.json")]) == 4
    assert not [k for k in keys if "/originals/" in k], "every original is removed"
    service_dir = Path(env["PIXELMILL_DATA_DIR"])
    assert not (service_dir / "renditions").exists()
    for folder in [service_dir, *worker_dirs]:
        left = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".log")]
        left = [p for p in left if p.name != "pixelmill.db"]
        assert left == [], left


def test_a_restarted_service_sends_what_it_spooled_and_leaves_the_broker_its_own(
    redis_env: dict[str, str],
) -> None:
    """An image still in the spool was never enqueued: the next start sends it. One without
    a spool file is in the broker: it stays pending for its worker, it is not failed."""
    store = RedisBatchStore(
        redis_env["PIXELMILL_STORE"], prefix=redis_env["PIXELMILL_REDIS_PREFIX"]
    )
    batch_id = "b" * 32
    spooled = Path(redis_env["PIXELMILL_DATA_DIR"]).resolve() / "spool" / batch_id / "one"
    spooled.parent.mkdir(parents=True)
    data = small_jpeg(77)
    spooled.write_bytes(data)
    images = [
        NewImage("1" * 32, "spooled.jpg", hashlib.sha256(data).hexdigest(), str(spooled)),
        NewImage("2" * 32, "enqueued.jpg", "e" * 64, str(spooled.with_name("gone"))),
    ]
    store.create_batch(batch_id, images)
    with celery_workers(redis_env), service(redis_env) as client:
        deadline = time.monotonic() + 30
        while (image := store.get_image(batch_id, "1" * 32)) is None or not image.status.is_final:
            assert time.monotonic() < deadline, "the spooled image was not sent"
            time.sleep(0.05)
        assert image.status.value == "done"
        assert not spooled.exists()
        time.sleep(0.5)
        waiting = client.get(f"/v1/batches/{batch_id}").json()
        assert waiting["pending"] == 1 and waiting["failed"] == 0, waiting
    store.close()


def test_the_spec_travels_in_a_task_message_unchanged() -> None:
    """The service's presets, formats, quality and limits rule every worker's render."""
    spec = RenderSpec(
        presets=(Preset("wide", 1600, 900), Preset("tiny", 32, 32)),
        formats=(OutputFormat.AVIF, OutputFormat.PNG),
        quality=((OutputFormat.AVIF, 42),),
        background=(1, 2, 3),
        keep_metadata=True,
        limits=Limits(max_bytes=1234, max_pixels=5678, timeout_s=9.5),
    )
    message = json.loads(json.dumps(spec_to_dict(spec)))
    assert spec_from_dict(message) == spec
    assert spec_from_dict(spec_to_dict(RenderSpec())) == RenderSpec()


def test_logs_show_broker_urls_without_their_password() -> None:
    assert redact_url("amqp://guest:s3cret@10.0.0.5:5672//") == "amqp://guest:***@10.0.0.5:5672//"
    assert redact_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_an_image_waiting_seconds_for_the_content_claim_is_not_lost(
    redis_env: dict[str, str],
) -> None:
    """The claim of its bytes is held elsewhere for 4 s (a long render on another machine):
    the task retries every half second, past Celery's default of three retries, and then
    renders. With that default the message was dropped and the image stayed pending."""
    data = small_jpeg(6262)
    sha = hashlib.sha256(data).hexdigest()
    holder = f"img0:elsewhere:{os.getpid()}:n1"  # another machine: never taken over
    store = RedisBatchStore(
        redis_env["PIXELMILL_STORE"], prefix=redis_env["PIXELMILL_REDIS_PREFIX"]
    )
    try:
        with celery_workers(redis_env, concurrency=1), service(redis_env) as client:
            assert store.claim_content(sha, holder, 60)
            released = threading.Timer(4.0, store.release_claim, (sha, holder))
            released.start()
            posted = time.monotonic()
            batch_id = client.post("/v1/batches", files=[upload("a.jpg", data)]).json()["batch_id"]
            image = wait_for_batch(client, batch_id, timeout_s=40)["images"][0]
            assert image["status"] == "done", image
            assert time.monotonic() - posted >= 4.0, "it did not wait for the claim"
            released.join()
    finally:
        store.close()
