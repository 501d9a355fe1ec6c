"""The celery engine where a review found it wanting: duplicated deliveries, time limits,
a storage that is down, and claims left by dead processes. Real service, real workers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from api_helpers import slow_jpeg, small_jpeg, upload, wait_for_batch
from celery_helpers import (
    REDIS_URL,
    celery_env,
    celery_workers,
    cleanup_celery,
    require_broker,
    service,
    settings_of,
)
from pixelmill.engine import celery_claims
from pixelmill.storage import open_storage
from pixelmill.store import RedisBatchStore
from s3_server import S3Server
from webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = celery_env("redis", tmp_path)
    yield env
    cleanup_celery(env)


def broker_keys(env: dict[str, str]) -> tuple[str, str]:
    """The Redis list holding the test's queued messages, and the unacknowledged hash."""
    base = f"{env['PIXELMILL_REDIS_PREFIX']}celery:"
    return base + env["PIXELMILL_CELERY_QUEUE"], base + "unacked"


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_a_message_delivered_twice_at_once_renders_its_image_once(
    redis_env: dict[str, str],
) -> None:
    """Two copies of one message run side by side (a redelivery while the first still
    renders): the second waits for the first's claim, then finds the image final. One run
    counted, one outcome, one count in the stats."""
    client_redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    queue_key, unacked_key = broker_keys(redis_env)
    prefix = redis_env["PIXELMILL_REDIS_PREFIX"]
    with service(redis_env) as client:
        data = slow_jpeg(21, (2000, 1400))
        batch_id = client.post("/v1/batches", files=[upload("a.jpg", data)]).json()["batch_id"]
        wait_until(lambda: client_redis.llen(queue_key) == 1, 10, "the message")
        client_redis.rpush(queue_key, client_redis.lindex(queue_key, 0) or "")
        with celery_workers(redis_env, concurrency=2):
            status = wait_for_batch(client, batch_id)
            wait_until(
                lambda: client_redis.llen(queue_key) == 0 and client_redis.hlen(unacked_key) == 0,
                30,
                "both copies to be acknowledged",
            )
    image = status["images"][0]
    assert image["status"] == "done" and status["completed"] == 1, status
    runs = client_redis.hget(f"{prefix}image:{batch_id}:{image['image_id']}", "attempts")
    stats = client_redis.hgetall(f"{prefix}stats")
    client_redis.close()
    assert runs == "1", "the image was rendered by both copies of its message"
    assert stats == {"images_done": "1"}, stats


def test_the_soft_time_limit_fails_the_image_timeout_without_a_traceback(
    redis_env: dict[str, str],
) -> None:
    """The limit strikes inside the render: the image fails ``timeout``, and the worker's log
    shows no "internal error" traceback (the render's catch-all lets the limit through)."""
    env = {**redis_env, "PIXELMILL_IMAGE_TIMEOUT_S": "0.3"}
    with celery_workers(env) as workers, service(env) as client:
        files = [upload("slow.jpg", slow_jpeg(5, (2400, 1600))), upload("b.jpg", small_jpeg(3))]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        status = wait_for_batch(client, batch_id)
        log = workers[0].log()
    slow = status["images"][0]
    assert slow["status"] == "failed" and slow["error"]["code"] == "timeout", slow
    assert status["images"][1]["status"] == "done", status
    assert "Traceback" not in log and "internal error" not in log, log


def test_a_storage_down_when_the_task_starts_gives_the_message_back(
    redis_env: dict[str, str], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original is stored, then the bucket's server goes away before a worker takes the
    message: the message is not acknowledged as a failure (the image would stay pending
    for ever); once the server is back the image is rendered."""
    bucket = s3_server.new_bucket()
    env = {**redis_env, **s3_server.env(bucket, "pm")}
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    _, unacked_key = broker_keys(env)
    client_redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with celery_workers(env) as workers, service(env) as client:
        # The worker checked the storage at its start; frozen, it takes nothing yet.
        os.killpg(workers[0].pid, signal.SIGSTOP)
        files = [upload("a.jpg", small_jpeg(8))]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        wait_until(lambda: client_redis.hlen(unacked_key) == 0, 1, "nothing")
        wait_until(
            lambda: any("/originals/" in k for k in s3_server.keys(bucket, "pm/")), 10, "upload"
        )
        time.sleep(0.5)  # the message follows the original at once
        s3_server.stop()
        try:
            os.killpg(workers[0].pid, signal.SIGCONT)
            # The worker takes the message, meets the dead storage and lets go of it.
            wait_until(lambda: client_redis.hlen(unacked_key) == 1, 30, "a delivery")
            wait_until(
                lambda: (
                    client_redis.hlen(unacked_key) == 0 or "storage unavailable" in workers[0].log()
                ),
                60,
                "the outage",
            )
        finally:
            s3_server.start()
        status = wait_for_batch(client, batch_id, timeout_s=60)
        log = workers[0].log()
    client_redis.close()
    assert status["images"][0]["status"] == "done", status
    assert "giving the message back" in log and "Traceback" not in log, log


def test_a_claim_left_by_a_dead_process_of_this_machine_is_taken_over(
    redis_env: dict[str, str],
) -> None:
    """A pool process killed mid-render leaves its claim; the redelivery on this machine
    takes it over at once instead of waiting for it to expire. A live holder keeps it."""
    store = RedisBatchStore(REDIS_URL, prefix=redis_env["PIXELMILL_REDIS_PREFIX"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    machine = celery_claims.MACHINE_ID
    try:
        store.claim_content("a" * 64, f"img1:{machine}:{dead.pid}:n1", 60)
        assert celery_claims.take_claim(store, "a" * 64, f"img1:{machine}:{os.getpid()}:n2")
        assert store.claim_holder("a" * 64) == f"img1:{machine}:{os.getpid()}:n2"
        # A live holder (this process), or one on another machine, is waited for.
        assert not celery_claims.take_claim(store, "a" * 64, f"img1:{machine}:1:n3")
        store.claim_content("b" * 64, f"img2:elsewhere:{dead.pid}:n1", 60)
        assert not celery_claims.take_claim(store, "b" * 64, f"img2:{machine}:1:n2")
    finally:
        store.close()


@contextmanager
def silent_broker() -> Iterator[int]:
    """A port on loopback that accepts connections and never answers (a hung broker)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("scheme", ["redis://", "amqp://guest:s3cret@"])
def test_health_and_metrics_answer_at_once_when_the_broker_hangs(
    redis_env: dict[str, str], scheme: str
) -> None:
    """A broker that accepts and never answers: /healthz says so within a bound (it used to
    block for minutes), /metrics answers, and an upload answered 202 shows as unsent."""
    with silent_broker() as port:
        env = {**redis_env, "PIXELMILL_BROKER_URL": f"{scheme}127.0.0.1:{port}/0"}
        with service(env) as client:
            timings = []
            for path in ("/healthz", "/metrics", "/healthz"):
                started = time.monotonic()
                response = client.get(path, timeout=10)
                timings.append(time.monotonic() - started)
            assert response.status_code == 503
            health = response.json()
            assert health["engine"] == "unreachable", health
            assert health["reason"] == "the broker does not answer", health
            assert max(timings) < 2.5 and timings[-1] < 0.5, timings
            client.post("/v1/batches", files=[upload("a.jpg", small_jpeg(2))])
            health = wait_until(
                lambda: (h := client.get("/healthz", timeout=10).json())["unsent"] == 1 and h,
                10,
                "the unsent image",
            )
            assert health["status"] == "unavailable" and "s3cret" not in str(health)


def stored_originals(env: dict[str, str]) -> list[Path]:
    folder = Path(env["PIXELMILL_STORAGE"].removeprefix("file://")) / "originals"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_cancelled_images_let_go_of_their_originals_with_no_worker_running(
    redis_env: dict[str, str],
) -> None:
    """No worker will ever take these messages: the cancel itself removes the originals
    (they used to stay in storage until a worker came, if one ever did)."""
    with service(redis_env) as client:
        files = [upload(f"{i}.jpg", small_jpeg(60 + i)) for i in range(3)]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        wait_until(lambda: client.get("/healthz").json()["queued"] == 3, 10, "3 messages")
        assert len(stored_originals(redis_env)) == 3
        cancelled = client.post(f"/v1/batches/{batch_id}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["cancelled"] == 3
        assert stored_originals(redis_env) == []


def test_an_upload_of_bytes_whose_original_is_being_deleted_stores_it_again(
    redis_env: dict[str, str],
) -> None:
    """The last image of some bytes lets go of the original (count 0) just as the same bytes
    are uploaded again: the upload waits for the delete, then stores the original, and
    its worker finds it (it used to be deleted under the new image: "original is gone")."""
    data = small_jpeg(91)
    sha = hashlib.sha256(data).hexdigest()
    settings = settings_of(redis_env)
    store = RedisBatchStore(REDIS_URL, prefix=redis_env["PIXELMILL_REDIS_PREFIX"])
    storage = open_storage(settings)
    store.hold_original(sha, "earlier-image")
    source = Path(redis_env["PIXELMILL_DATA_DIR"]).parent / "earlier.jpg"
    source.write_bytes(data)
    storage.put_original(sha, source)
    try:
        # The earlier image's worker: the count reaches 0, it is about to delete.
        assert store.release_original(sha, "earlier-image") == 0
        with service(redis_env) as client:
            batch_id = client.post("/v1/batches", files=[upload("again.jpg", data)]).json()[
                "batch_id"
            ]
            time.sleep(0.5)  # the new upload is held back while the delete runs
            storage.delete_original(sha)
            store.original_deleted(sha)
            with celery_workers(redis_env):
                status = wait_for_batch(client, batch_id, timeout_s=30)
    finally:
        store.close()
    image = status["images"][0]
    assert image["status"] == "done", image
    assert stored_originals(redis_env) == []


def test_a_broker_that_refuses_the_login_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    """Wrong credentials are a setting to fix: one line without the password, exit 2 (it
    was Celery's traceback and exit 1)."""
    require_broker("amqp")
    env = {
        **os.environ,
        "PIXELMILL_ENGINE": "celery",
        "PIXELMILL_BROKER_URL": "amqp://guest:hunter2@127.0.0.1:5672//",
        "PIXELMILL_STORE": REDIS_URL,
        "PIXELMILL_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pixelmill", "worker", "--concurrency", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ACCESS_REFUSED" in lines[0], done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_sigterm_during_a_render_lets_it_finish_and_exits_0(redis_env: dict[str, str]) -> None:
    """Warm shutdown: the image being rendered ends ``done``, the worker exits 0, and the
    image queued behind it stays in the broker for the next worker."""
    files = [upload("slow.jpg", slow_jpeg(31, (2000, 1400))), upload("b.jpg", small_jpeg(32))]
    with celery_workers(redis_env) as workers, service(redis_env) as client:
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        wait_until(
            lambda: (
                client.get(f"/v1/batches/{batch_id}").json()["images"][0]["status"] == "processing"
            ),
            30,
            "the slow render",
        )
        assert workers[0].stop() == 0, workers[0].log()
        first = client.get(f"/v1/batches/{batch_id}").json()["images"]
        assert first[0]["status"] == "done", first
        assert first[1]["status"] == "pending", first
        with celery_workers(redis_env):
            assert wait_for_batch(client, batch_id)["completed"] == 2


def test_a_callback_cut_short_by_a_stop_is_sent_by_the_next_service_at_once(
    redis_env: dict[str, str],
) -> None:
    """The receiver fails, the service stops between attempts: the next service sends the
    callback at its start (it used to wait two minutes for the stopped one's lease)."""
    with webhook_receiver() as receiver:
        receiver.answers = [500] * 10
        with service(redis_env) as client:
            files = [upload("bad.jpg", b"not an image")]  # the batch is over at once
            created = client.post("/v1/batches", files=files, data={"callback_url": receiver.url})
            receiver.wait_for(1)
        receiver.answers = []
        count = len(receiver.calls)
        with service(redis_env):
            calls = receiver.wait_for(count + 1, timeout_s=15)
    assert json.loads(calls[-1].body)["batch_id"] == created.json()["batch_id"]


def test_erases_of_one_image_at_once_wait_for_each_other_and_never_answer_409(
    redis_env: dict[str, str],
) -> None:
    """An erase finding the content claimed by another erase waits for it (nothing renders),
    then answers as it finds the image: one 204, the others 404."""
    data = small_jpeg(6363, (600, 400))
    sha = hashlib.sha256(data).hexdigest()
    store = RedisBatchStore(REDIS_URL, prefix=redis_env["PIXELMILL_REDIS_PREFIX"])
    try:
        with celery_workers(redis_env), service(redis_env) as client:
            seen = []
            for _ in range(3):
                done = client.post("/v1/images?wait=true&timeout=60", files={"file": ("a", data)})
                assert done.json()["status"] == "done", done.json()
                barrier = threading.Barrier(3)
                codes: list[int] = []

                def erase(barrier: threading.Barrier, codes: list[int]) -> None:
                    barrier.wait()
                    codes.append(client.delete(f"/v1/images/{sha}").status_code)

                threads = [threading.Thread(target=erase, args=(barrier, codes)) for _ in range(3)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(30)
                seen.append(sorted(codes))
            # Another erase holds the claim for half a second: this one waits, then erases.
            client.post("/v1/images?wait=true&timeout=60", files={"file": ("a", data)})
            assert store.claim_content(sha, "erase:elsewhere", 60)
            threading.Timer(0.5, store.release_claim, (sha, "erase:elsewhere")).start()
            waited = client.delete(f"/v1/images/{sha}")
        assert seen == [[204, 404, 404]] * 3, seen
        assert waited.status_code == 204, waited.text
    finally:
        store.close()
