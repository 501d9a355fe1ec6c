"""The distributed engine under faults: real service, real Celery workers, real brokers.

Workers run ``tests/fault_worker.py`` (``pixelmill worker`` whose render can crash, hang,
slow down and log its starts), so a test counts renders exactly and kills at the right time.

Timings these tests rely on (kombu 5.7 Redis transport, Celery 5.7):
- a message a worker holds is in the broker's ``unacked`` hash, scored with its delivery
  time; each worker sweeps it every ``unacked_restore_interval`` s (one scan per
  ``unacked_restore_throttle`` sweeps: default 10 x 10 = 100 s; the app sets the throttle to
  1 and the interval to a tenth of the visibility timeout, 1..10 s) and puts back what was
  delivered more than ``visibility_timeout`` s ago. Here: 6 s, so a dead worker's image
  comes back 6-7 s after it was delivered;
- a pool process that dies (``WorkerLostError``) gives its message back at once (acks late
  + reject on worker lost), whatever the broker;
- RabbitMQ gives a dead connection's unacknowledged messages back at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api_helpers import check_invariant, small_jpeg, upload
from api_server import ServerProcess
from celery_helpers import (
    REDIS_URL,
    Broker,
    WorkerProcess,
    celery_env,
    cleanup_celery,
    start_worker,
)
from s3_server import S3Server
from webhook_receiver import webhook_receiver

TESTS_DIR = Path(__file__).resolve().parent
VISIBILITY_TIMEOUT_S = 6.0
# How long after the visibility timeout a Redis redelivery may take: one sweep (1 s here),
# the worker's poll, the render starting.
REDELIVERY_SLACK_S = 6.0
BATCH_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1

pytestmark = pytest.mark.timeout(150)


@dataclass(frozen=True)
class RenderStart:
    """One line of the render log ``fault_worker`` writes."""

    sha256: str
    pid: int
    worker_pid: int
    at: float


def photos(count: int) -> list[bytes]:
    """``count`` small JPEGs, different from every other test's (fresh seeds)."""
    base = int.from_bytes(os.urandom(3), "big") * 1000
    return [small_jpeg(base + i) for i in range(count)]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Cluster:
    """A service and workers sharing one test's broker queue, store prefix and storage."""

    env: dict[str, str]
    tmp: Path
    stack: ExitStack
    services: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    ready_at: dict[int, float] = field(default_factory=dict)  # worker pid -> time.time()

    @property
    def render_log(self) -> Path:
        return Path(self.env["PIXELMILL_TEST_RENDER_LOG"])

    def start_service(self) -> ServerProcess:
        service = ServerProcess(self.env, self.tmp / f"service-{len(self.services)}.log")
        self.services.append(service)
        return service.start()

    def add_worker(self, concurrency: int = 1) -> WorkerProcess:
        worker = start_worker(self.env, concurrency, module="fault_worker")
        self.ready_at[worker.pid] = time.time()
        self.workers.append(worker)
        return worker

    def client(self) -> httpx.Client:
        return self.stack.enter_context(httpx.Client(base_url=self.services[-1].url, timeout=30))

    def renders(self) -> list[RenderStart]:
        if not self.render_log.is_file():
            return []
        starts = []
        for line in self.render_log.read_text().splitlines():
            sha, pid, worker_pid, at = line.split()
            starts.append(RenderStart(sha, int(pid), int(worker_pid), float(at)))
        return starts

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.kill()
        for service in self.services:
            if service.proc is not None and service.proc.poll() is None:
                service.kill()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    """Builds clusters; every process is SIGKILLed and every key and queue deleted after."""
    clusters: list[Cluster] = []
    with ExitStack() as stack:

        def make(broker: Broker, **settings: str) -> Cluster:
            env = celery_env(broker, tmp_path)
            env.update(
                PYTHONPATH=os.pathsep.join(
                    filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])
                ),
                PIXELMILL_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
                PIXELMILL_TEST_RENDER_LOG=str(tmp_path / f"renders-{len(clusters)}.log"),
            )
            env.update(settings)
            cluster = Cluster(env, tmp_path, stack)
            clusters.append(cluster)
            return cluster

        try:
            yield make
        finally:
            for cluster in clusters:
                cluster.stop_all()
                cleanup_celery(cluster.env)


class BatchWatch:
    """Polls a batch and checks, at every poll, the invariant and that no count goes back."""

    COUNTERS = ("completed", "duplicates", "failed", "cancelled")

    def __init__(self, client: httpx.Client, batch_id: str, total: int) -> None:
        self.client = client
        self.batch_id = batch_id
        self.total = total
        self.last: dict[str, Any] | None = None
        self.polls = 0

    def poll(self) -> dict[str, Any]:
        response = self.client.get(f"/v1/batches/{self.batch_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        check_invariant(status)
        assert status["total"] == self.total, brief(status)
        for name in self.COUNTERS:
            assert 0 <= status[name] <= self.total, brief(status)
            if self.last is not None:
                assert status[name] >= self.last[name], (name, brief(self.last), brief(status))
        if self.last is not None:
            assert status["pending"] <= self.last["pending"], (brief(self.last), brief(status))
        self.last = status
        self.polls += 1
        return status

    def until(self, done: Any, timeout_s: float = BATCH_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not done(status := self.poll()):
            assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {brief(status)}"
            time.sleep(POLL_INTERVAL_S)
        return status

    def until_finished(self, timeout_s: float = BATCH_TIMEOUT_S) -> dict[str, Any]:
        return self.until(
            lambda s: s["status"] in ("completed", "cancelled") and s["pending"] == 0, timeout_s
        )


def brief(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` without its image list, plus the images that are not done (for messages)."""
    others = [
        {"sha256": i["sha256"], "status": i["status"], "error": i["error"]}
        for i in status.get("images", [])
        if i["status"] != "done"
    ]
    return {**{k: v for k, v in status.items() if k != "images"}, "not_done": others}


def send_batch(
    client: httpx.Client, images: list[bytes], callback_url: str | None = None
) -> BatchWatch:
    files = [upload(f"{i}.jpg", data) for i, data in enumerate(images)]
    data = {"callback_url": callback_url} if callback_url else None
    response = client.post("/v1/batches", files=files, data=data)
    assert response.status_code == 202, response.text
    return BatchWatch(client, response.json()["batch_id"], len(images))


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)
    return value


def store_stats(env: dict[str, str]) -> dict[str, int]:
    """The store's count of images that became final, per status (written once per image)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        raw = client.hgetall(env["PIXELMILL_REDIS_PREFIX"] + "stats")
    finally:
        client.close()
    return {str(k): int(v) for k, v in raw.items()}


def assert_folder_storage_whole(storage: Path) -> None:
    """Every rendition on disk is listed by its manifest; no original and no temp file left."""
    for folder in (storage / "renditions").glob("*/*"):
        manifest = json.loads((folder / "manifest.json").read_text())
        listed = {r["path"] for r in manifest["renditions"]} | {"manifest.json"}
        on_disk = {p.name for p in folder.iterdir()}
        assert on_disk == listed, f"{folder}: unlisted {on_disk - listed}"
    assert not [p for p in (storage / "originals").rglob("*") if p.is_file()]


def assert_bucket_whole(s3: S3Server, bucket: str, shas: set[str]) -> None:
    """Every object under renditions/ is listed by a manifest; every sha has one; no
    original left."""
    keys = s3.keys(bucket)
    assert not [k for k in keys if k.startswith("originals/")], keys
    client = s3.client()
    listed: set[str] = set()
    for sha in shas:
        folder = f"renditions/{sha[:2]}/{sha}/"
        body = client.get_object(Bucket=bucket, Key=folder + "manifest.json")["Body"].read()
        manifest = json.loads(body)
        listed |= {folder + "manifest.json"} | {folder + r["path"] for r in manifest["renditions"]}
    rendition_keys = {k for k in keys if k.startswith("renditions/")}
    assert rendition_keys == listed, rendition_keys ^ listed


def data_dir_leftovers(folders: list[Path]) -> list[Path]:
    """Renditions, manifests or originals left in data dirs (S3 mode keeps none)."""
    suffixes = {".jpg", ".jpeg", ".webp", ".avif", ".png", ".json"}
    return [
        p
        for folder in folders
        for p in folder.rglob("*")
        if p.is_file()
        and (p.suffix in suffixes or "originals" in p.parts or "renditions" in p.parts)
    ]


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("broker", "storage"), [("redis", "s3"), ("amqp", "folder")])
def test_sigkill_one_of_two_workers_mid_batch_loses_nothing(
    make_cluster: Any, request: pytest.FixtureRequest, broker: Broker, storage: str
) -> None:
    """Kill one of two workers mid-batch: counts hold at every poll, every image ends done
    once, only the killed worker's image is rendered again, storage holds nothing half-made."""
    cluster: Cluster = make_cluster(broker, PIXELMILL_TEST_RENDER_DELAY_S="0.25")
    bucket = ""
    if storage == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket()
        cluster.env.update(s3.env(bucket))
    cluster.start_service()
    victim, survivor = cluster.add_worker(), cluster.add_worker()
    images = photos(40)
    watch = send_batch(cluster.client(), images)

    watch.until(lambda s: s["completed"] >= 8)
    victim.kill()
    killed_at = time.time()
    final = watch.until_finished()

    assert final["status"] == "completed" and final["completed"] == 40, brief(final)
    assert [i["status"] for i in final["images"]] == ["done"] * 40, brief(final)
    assert {i["sha256"] for i in final["images"]} == {sha256_of(d) for d in images}
    assert store_stats(cluster.env).get("images_done") == 40
    renders = cluster.renders()
    per_sha = Counter(r.sha256 for r in renders)
    assert set(per_sha) == {sha256_of(d) for d in images}
    again = {sha for sha, n in per_sha.items() if n > 1}
    assert max(per_sha.values()) <= 2, per_sha
    first_by = {r.sha256: r.worker_pid for r in reversed(renders)}
    assert all(first_by[sha] == victim.pid for sha in again), (again, first_by)
    assert len(again) <= 1  # concurrency 1, prefetch 1: the victim held one message
    assert any(r.worker_pid == survivor.pid and r.at > killed_at for r in renders)
    if storage == "s3":
        assert_bucket_whole(request.getfixturevalue("s3_server"), bucket, set(per_sha))
        homes = [Path(cluster.env["PIXELMILL_DATA_DIR"])] + [
            w.log_path.parent for w in cluster.workers
        ]
        assert data_dir_leftovers(homes) == []
    else:
        assert_folder_storage_whole(Path(cluster.env["PIXELMILL_STORAGE"].removeprefix("file://")))


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_whole_worker_killed_its_image_is_redone_by_a_new_worker(
    make_cluster: Any, broker: Broker
) -> None:
    """SIGKILL a worker and its pool; a new worker renders the image it held: on Redis once
    the visibility timeout has run out, on RabbitMQ as soon as it is up."""
    cluster: Cluster = make_cluster(broker, PIXELMILL_TEST_RENDER_DELAY_S="1.5")
    cluster.start_service()
    first = cluster.add_worker()
    images = photos(2)
    watch = send_batch(cluster.client(), images)
    held = wait_until(cluster.renders, 30, "first render")[0]
    assert held.worker_pid == first.pid
    first.kill()
    killed_at = time.time()
    second = cluster.add_worker()
    redone = wait_until(
        lambda: [
            r for r in cluster.renders() if r.sha256 == held.sha256 and r.worker_pid == second.pid
        ],
        VISIBILITY_TIMEOUT_S + REDELIVERY_SLACK_S + 30,
        "redelivery",
    )[0]
    after_delivery = redone.at - held.at
    ready_s = cluster.ready_at[second.pid] - killed_at
    print(
        f"\n{broker}: image redone {redone.at - killed_at:.1f} s after the kill, "
        f"{after_delivery:.1f} s after its first delivery (visibility timeout "
        f"{VISIBILITY_TIMEOUT_S:g} s, new worker ready {ready_s:.1f} s "
        "after the kill)"
    )
    if broker == "redis":
        assert (
            VISIBILITY_TIMEOUT_S - 0.5
            <= after_delivery
            <= VISIBILITY_TIMEOUT_S + REDELIVERY_SLACK_S
        )
    else:
        assert redone.at - killed_at <= ready_s + 3.0
    final = watch.until_finished()
    assert final["completed"] == 2 and final["failed"] == 0, brief(final)
    assert Counter(r.sha256 for r in cluster.renders())[held.sha256] == 2


def test_an_image_that_kills_its_worker_twice_fails_worker_crashed(make_cluster: Any) -> None:
    """A render that takes its pool process down runs twice, then fails ``worker_crashed``;
    the other images are done and the worker lives on to take the next batch."""
    images = photos(5)
    crasher = sha256_of(images[1])
    cluster: Cluster = make_cluster("redis", PIXELMILL_TEST_CRASH_SHAS=crasher)
    cluster.start_service()
    worker = cluster.add_worker()
    final = send_batch(cluster.client(), images).until_finished()

    by_sha = {i["sha256"]: i for i in final["images"]}
    assert by_sha[crasher]["status"] == "failed"
    assert by_sha[crasher]["error"]["code"] == "worker_crashed", by_sha[crasher]
    assert final["completed"] == 4 and final["failed"] == 1, brief(final)
    assert Counter(r.sha256 for r in cluster.renders())[crasher] == 2
    assert worker.proc.poll() is None, worker.log()
    after = send_batch(cluster.client(), photos(2)).until_finished()
    assert after["completed"] == 2, after


def test_a_hang_fails_timeout_and_the_worker_carries_on(make_cluster: Any) -> None:
    """A render that never returns fails ``timeout`` at PIXELMILL_IMAGE_TIMEOUT_S; the same
    worker renders the images behind it."""
    images = photos(4)
    hung = sha256_of(images[0])
    cluster: Cluster = make_cluster(
        "redis", PIXELMILL_IMAGE_TIMEOUT_S="2", PIXELMILL_TEST_HANG_SHAS=hung
    )
    cluster.start_service()
    worker = cluster.add_worker()
    started = time.monotonic()
    final = send_batch(cluster.client(), images).until_finished(timeout_s=30)

    by_sha = {i["sha256"]: i for i in final["images"]}
    assert by_sha[hung]["status"] == "failed"
    assert by_sha[hung]["error"]["code"] == "timeout", by_sha[hung]
    assert by_sha[hung]["renditions"] == []
    assert final["completed"] == 3 and final["failed"] == 1, brief(final)
    assert time.monotonic() - started < 20
    assert Counter(r.sha256 for r in cluster.renders())[hung] == 1
    assert worker.proc.poll() is None, worker.log()


def test_a_hang_the_soft_limit_cannot_break_fails_timeout_at_the_hard_limit(
    make_cluster: Any,
) -> None:
    """A render stuck where the soft limit's signal cannot reach (hung C code) is killed at
    the hard limit (timeout + 10 s); its image fails ``timeout``, written by the worker's
    main process, and the worker renders the next image."""
    images = photos(2)
    stuck = sha256_of(images[0])
    cluster: Cluster = make_cluster(
        "redis", PIXELMILL_IMAGE_TIMEOUT_S="1", PIXELMILL_TEST_STUCK_SHAS=stuck
    )
    cluster.start_service()
    worker = cluster.add_worker()
    final = send_batch(cluster.client(), images).until_finished(timeout_s=40)

    by_sha = {i["sha256"]: i for i in final["images"]}
    assert by_sha[stuck]["status"] == "failed", brief(final)
    assert by_sha[stuck]["error"]["code"] == "timeout", by_sha[stuck]
    assert final["completed"] == 1 and final["failed"] == 1, brief(final)
    assert Counter(r.sha256 for r in cluster.renders())[stuck] == 1
    assert worker.proc.poll() is None, worker.log()


def test_with_s3_storage_nothing_passes_through_a_shared_folder(
    make_cluster: Any, s3_server: S3Server
) -> None:
    """S3 storage, the service and each worker on their own empty data dir: the batch is
    done, every rendition and manifest is in the bucket, none in any data dir, no original
    left anywhere."""
    bucket = s3_server.new_bucket()
    cluster: Cluster = make_cluster("redis", **s3_server.env(bucket))
    cluster.start_service()
    cluster.add_worker()
    cluster.add_worker()
    images = photos(12)
    final = send_batch(cluster.client(), images).until_finished()

    assert final["completed"] == 12, brief(final)
    shas = {sha256_of(d) for d in images}
    assert_bucket_whole(s3_server, bucket, shas)
    homes = [Path(cluster.env["PIXELMILL_DATA_DIR"])] + [w.log_path.parent for w in cluster.workers]
    assert len(set(homes)) == 3
    assert data_dir_leftovers(homes) == []
    served = cluster.client().get(final["images"][0]["renditions"][0]["path"])
    assert served.status_code == 200 and served.content


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_service_restarted_mid_batch_loses_nothing(make_cluster: Any, stop: str) -> None:
    """Stop the service while workers render: they carry on; the restarted service reports
    the batch completed with exact counts and sends its webhook exactly once."""
    cluster: Cluster = make_cluster("redis", PIXELMILL_TEST_RENDER_DELAY_S="0.3")
    service = cluster.start_service()
    cluster.add_worker()
    cluster.add_worker()
    images = photos(20)
    with webhook_receiver() as receiver:
        watch = send_batch(cluster.client(), images, callback_url=receiver.url)
        watch.until(lambda s: s["completed"] >= 4)
        if stop == "sigterm":
            # After a graceful shutdown uvicorn re-raises the signal it caught.
            assert service.terminate() in (0, -signal.SIGTERM), service.log()
        else:
            service.kill()
        stopped_at = time.time()
        wait_until(
            lambda: sum(r.at > stopped_at for r in cluster.renders()) >= 3,
            30,
            "workers rendering while the service is down",
        )
        cluster.start_service()
        watch.client = cluster.client()
        final = watch.until_finished()
        unfinished = [i for i in final["images"] if i["status"] != "done"]
        assert final["status"] == "completed" and unfinished == [], unfinished
        assert [i["status"] for i in final["images"]] == ["done"] * 20
        calls = receiver.wait_for(1)
        time.sleep(1.5)  # a second delivery would come within the watcher's next rounds
        bodies = [json.loads(c.body) for c in receiver.calls]
        assert [b["batch_id"] for b in bodies] == [watch.batch_id], bodies
        assert bodies[0]["completed"] == 20 and bodies[0]["pending"] == 0, bodies[0]
        assert calls
    per_sha = Counter(r.sha256 for r in cluster.renders())
    assert set(per_sha) == {sha256_of(d) for d in images}
    assert max(per_sha.values()) == 1, per_sha
    assert store_stats(cluster.env).get("images_done") == 20
