"""Real Celery workers for the distributed-engine tests: settings, processes, clean-up.

``celery_env`` gives a test its own Redis key prefix (store and Redis broker keys) and its
own queue; ``start_worker`` runs ``python -m pixelmill worker`` in a process group of its
own and waits for its ready line; ``cleanup_celery`` deletes the test's keys and queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil
import pytest
import redis

from api_server import app_client
from conftest import IN_CI
from pixelmill.config import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
READY_LINE = "pixelmill worker ready"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

Broker = Literal["redis", "amqp"]


def _amqp_alive() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", 5672))
        except OSError:
            return False
    return True


def require_broker(broker: Broker) -> None:
    """Skip (fail under CI=true) when the broker is not running here."""
    if broker == "amqp" and not _amqp_alive():
        reason = "no RabbitMQ at 127.0.0.1:5672"
        if IN_CI:
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        reason = "no Redis at 127.0.0.1:6379"
        if IN_CI:
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)


def celery_env(broker: Broker, tmp_path: Path) -> dict[str, str]:
    """PIXELMILL_* variables of one test: its own prefix and queue, a shared storage folder
    under ``tmp_path`` (override PIXELMILL_STORAGE for S3), the service's data dir."""
    require_broker(broker)
    tag = uuid.uuid4().hex[:12]
    storage = tmp_path / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    return {
        "PIXELMILL_ENGINE": "celery",
        "PIXELMILL_BROKER_URL": REDIS_URL if broker == "redis" else AMQP_URL,
        "PIXELMILL_STORE": REDIS_URL,
        "PIXELMILL_REDIS_PREFIX": f"pixelmill-test:{tag}:",
        "PIXELMILL_CELERY_QUEUE": f"pixelmill-test-{tag}",
        "PIXELMILL_STORAGE": f"file://{storage}",
        "PIXELMILL_DATA_DIR": str(tmp_path / "service"),
        "PIXELMILL_WEBHOOK_ALLOW_PRIVATE": "true",
    }


class WorkerProcess:
    """``pixelmill worker`` as a subprocess in its own process group."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        """The pool processes (the worker's direct children)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            children: list[psutil.Process] = psutil.Process(self.pid).children()
            return children
        return []

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def kill_child(self) -> int:
        """SIGKILL one pool process (the main process starts another); returns its pid."""
        deadline = time.monotonic() + 10
        while not (children := self.children()):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker has no pool process")
            time.sleep(0.05)
        child = children[0]
        child.send_signal(signal.SIGKILL)
        return int(child.pid)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL the group after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # a pool process left behind
        return code


def start_worker(
    env: Mapping[str, str],
    concurrency: int = 1,
    data_dir: Path | None = None,
    module: str | None = None,
) -> WorkerProcess:
    """Start a worker and wait for its ready line (30 s).

    ``module``: a Python module to run instead of ``pixelmill`` (a fault test's wrapper
    that patches the render, then calls ``run_worker``); it gets ``--concurrency N``.
    """
    worker_dir = (
        Path(data_dir)
        if data_dir is not None
        else (Path(env["PIXELMILL_DATA_DIR"]).parent / f"worker-{uuid.uuid4().hex[:8]}")
    )
    worker_dir.mkdir(parents=True, exist_ok=True)
    log_path = worker_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
    full_env = {**os.environ, **env, "PIXELMILL_DATA_DIR": str(worker_dir)}
    args = [sys.executable, "-m", module or "pixelmill"]
    if module is None:
        args.append("worker")
    args += ["--concurrency", str(concurrency)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=log, start_new_session=True)
    worker = WorkerProcess(proc, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while READY_LINE not in worker.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"the worker did not become ready:\n{worker.log()[-3000:]}")
        time.sleep(0.05)
    return worker


def cleanup_celery(env: Mapping[str, str]) -> None:
    """Delete the test's Redis keys (store and broker) and, on RabbitMQ, its queue."""
    prefix = env["PIXELMILL_REDIS_PREFIX"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    if env["PIXELMILL_BROKER_URL"].startswith("amqp"):
        from kombu import Connection

        queue = env["PIXELMILL_CELERY_QUEUE"]
        names = (queue, f"{queue}.control.pidbox", f"reply.{queue}.control.pidbox")
        with Connection(env["PIXELMILL_BROKER_URL"]) as conn:
            # A channel per step: RabbitMQ closes a channel that deletes what is not there.
            with contextlib.suppress(Exception):
                channel: Any = conn.channel()
                channel.queue_delete(queue)
                channel.close()
            for exchange in names:
                with contextlib.suppress(Exception):
                    channel = conn.channel()
                    channel.exchange_delete(exchange)
                    channel.close()


@contextlib.contextmanager
def celery_workers(
    env: Mapping[str, str], count: int = 1, concurrency: int = 1
) -> Iterator[list[WorkerProcess]]:
    """``count`` workers, each with its own data dir; killed (SIGKILL) at the end."""
    workers: list[WorkerProcess] = []
    try:
        for _ in range(count):
            workers.append(start_worker(env, concurrency))
        yield workers
    finally:
        for worker in workers:
            worker.kill()


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Both brokers this machine runs."""
    name: Broker = request.param
    return name


@pytest.fixture
def celery_settings_env(broker: Broker, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``celery_env`` for the test's broker, cleaned up afterwards."""
    env = celery_env(broker, tmp_path)
    yield env
    cleanup_celery(env)


def settings_of(env: Mapping[str, str]) -> Settings:
    """The Settings a process with ``env`` would read."""
    values = {
        k.removeprefix("PIXELMILL_").lower(): v
        for k, v in env.items()
        if k.startswith("PIXELMILL_")
    }
    return Settings.model_validate(values)


@contextlib.contextmanager
def service(env: Mapping[str, str]) -> Iterator[httpx.Client]:
    """The real service (uvicorn on loopback) with ``env``'s settings, and a client of it."""
    with app_client(settings_of(env)) as client:
        yield client
