"""A service and Celery workers of one fault test, and the checks the fault tests share.

The workers run ``tests/fault_worker.py``; ``Cluster.renders`` reads the render log it
writes. ``BatchWatch`` polls a batch and checks, at every poll, what must always hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from api_helpers import check_invariant, small_jpeg, upload
from api_server import ServerProcess
from celery_helpers import REDIS_URL, WorkerProcess, start_worker
from s3_server import S3Server

BATCH_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1


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
