"""Real uvicorn servers on 127.0.0.1 for the API tests: in a thread, or as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from pixelmill.api.app import create_app, uvicorn_config
from pixelmill.config import Settings

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_healthy(url: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {url} did not become healthy")
        time.sleep(0.05)


@contextmanager
def running_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of this process; yields its base URL.

    The server is configured as ``pixelmill serve`` configures it (timeouts, caps).
    """
    port = free_port()
    settings: Settings = app.state.settings
    config = uvicorn_config(app, settings, "127.0.0.1", port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)


@contextmanager
def app_client(settings: Settings) -> Iterator[httpx.Client]:
    """A client of ``create_app(settings)`` served by uvicorn in a thread of this process."""
    with (
        running_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def one_worker_settings(request: pytest.FixtureRequest, data_dir: Path, store: str) -> Settings:
    """One worker (so a batch takes a while) on ``store``: ``sqlite``, or ``redis`` under the
    test's own key prefix."""
    if store == "redis":
        return Settings(
            data_dir=data_dir,
            workers=1,
            store=request.getfixturevalue("redis_server_url"),
            redis_prefix=request.getfixturevalue("redis_prefix"),
        )
    return Settings(data_dir=data_dir, workers=1)


class ServerProcess:
    """``python -m pixelmill serve`` (the real command) with PIXELMILL_* env."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        args = [sys.executable, "-m", "pixelmill", "serve"]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            # A session of its own, so SIGKILL can reach the worker processes too.
            self.proc = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        wait_until_healthy(self.url)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the server and every process of its session (workers included)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (uvicorn drains) and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
