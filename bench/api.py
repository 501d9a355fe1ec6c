"""The HTTP API: one batch end to end vs ``pixelmill run``, status latency, upload memory.

Each measurement starts ``pixelmill serve`` on 127.0.0.1 (a free port) as a subprocess with
``PIXELMILL_WORKERS`` and a fresh temporary ``PIXELMILL_DATA_DIR``, so nothing is a duplicate.
Before timing, one small unrelated image is processed so the worker pool is warm, as it would
be in a running service.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from bench.contenders import pixelmill_argv, pixelmill_executable
from bench.procs import CPU_INTERVAL_S, TreeSampler, busy_seconds, run_timed, wait_for_quiet

POLL_INTERVAL_S = 0.05
STARTUP_TIMEOUT_S = 60.0
BATCH_TIMEOUT_S = 600.0
FINAL_BATCH_STATES = {"completed", "cancelled"}
MiB = 1024 * 1024


def api_available() -> bool:
    """True once ``pixelmill.api.app`` provides ``create_app`` and ``serve``."""
    try:
        from pixelmill.api import app
    except ImportError:
        return False
    has_app = hasattr(app, "create_app") and hasattr(app, "serve")
    return has_app and pixelmill_executable() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path


@contextlib.contextmanager
def running_server(workers: int) -> Iterator[Server]:
    """``pixelmill serve`` on a free loopback port with a fresh data dir; stopped on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix="pixelmill-bench-api-"))
    port = _free_port()
    env = {**os.environ, "PIXELMILL_WORKERS": str(workers), "PIXELMILL_DATA_DIR": str(data_dir)}
    env.pop("PIXELMILL_API_KEY", None)
    argv = [pixelmill_executable() or "pixelmill", "serve", "--host", "127.0.0.1"]
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [*argv, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(process, f"http://127.0.0.1:{port}", data_dir)
    try:
        _wait_healthy(server, Path(log.name))
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_healthy(server: Server, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')[-800:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy in time")


def _multipart(stack: ExitStack, sources: Sequence[Path]) -> list[tuple[str, tuple[str, object]]]:
    # File objects, not bytes: httpx streams them, so the client holds no whole upload either.
    return [("files", (path.name, stack.enter_context(open(path, "rb")))) for path in sources]


@dataclass
class BatchRun:
    seconds: float
    upload_s: float
    final: dict[str, object]
    poll_latencies_s: list[float]


def post_batch(client: httpx.Client, sources: Sequence[Path]) -> tuple[str, float]:
    """Upload ``sources`` as one batch; return its id and the upload time."""
    started = time.perf_counter()
    with ExitStack() as stack:
        response = client.post("/v1/batches", files=_multipart(stack, sources))
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/batches: {response.status_code} {response.text[:300]}")
    return str(response.json()["batch_id"]), time.perf_counter() - started


def run_batch(client: httpx.Client, sources: Sequence[Path]) -> BatchRun:
    """Upload, then poll the status until the batch is final; time upload start -> final."""
    started = time.perf_counter()
    batch_id, upload_s = post_batch(client, sources)
    latencies: list[float] = []
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    while True:
        t0 = time.perf_counter()
        response = client.get(f"/v1/batches/{batch_id}")
        elapsed = time.perf_counter() - t0
        status = response.json()
        if status.get("status") in FINAL_BATCH_STATES:
            break
        latencies.append(elapsed)  # only polls answered while the workers were busy
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} not finished after {BATCH_TIMEOUT_S}s")
        time.sleep(POLL_INTERVAL_S)
    seconds = time.perf_counter() - started
    return BatchRun(seconds, upload_s, status, latencies)


def _warm_up(client: httpx.Client) -> None:
    image = Image.new("RGB", (640, 480), (int(time.time()) % 256, 90, 160))
    data = io.BytesIO()
    image.save(data, "JPEG")
    response = client.post("/v1/batches", files=[("files", ("warm-up.jpg", data.getvalue()))])
    batch_id = response.json()["batch_id"]
    for _ in range(600):
        if client.get(f"/v1/batches/{batch_id}").json().get("status") in FINAL_BATCH_STATES:
            return
        time.sleep(0.05)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def _run_batch_measuring_noise(
    client: httpx.Client, server: Server, sources: Sequence[Path]
) -> tuple[BatchRun, float]:
    """``run_batch``, plus the cores other work on the machine kept busy meanwhile."""
    sampler = TreeSampler(server.process.pid, CPU_INTERVAL_S)
    sampler.sample()
    server_before, own_before, busy_before = (
        sampler.cpu_seconds,
        time.process_time(),
        busy_seconds(),
    )
    with sampler:
        batch = run_batch(client, sources)
    sampler.sample()
    server_cpu = sampler.cpu_seconds - server_before
    own_cpu = time.process_time() - own_before
    others = max(0.0, busy_seconds() - busy_before - server_cpu - own_cpu) / batch.seconds
    return batch, others


def run_api_vs_cli(
    sources: Sequence[Path],
    rounds: int,
    workers: int,
    quiet_wait_s: float = 10.0,
    log: bool = True,
) -> dict[str, object]:
    """Alternate API batch and CLI run on the same photos; medians, ratio, poll latency."""
    api_seconds: list[float] = []
    cli_seconds: list[float] = []
    latencies: list[float] = []
    api_noise: list[float] = []
    cli_noise: list[float] = []
    finals: list[dict[str, object]] = []
    for index in range(rounds):
        with (
            running_server(workers) as server,
            httpx.Client(base_url=server.base_url, timeout=120.0) as client,
        ):
            _warm_up(client)
            if quiet_wait_s:
                wait_for_quiet(max_wait_s=quiet_wait_s)
            batch, others = _run_batch_measuring_noise(client, server, sources)
        api_seconds.append(batch.seconds)
        api_noise.append(others)
        latencies.extend(batch.poll_latencies_s)
        finals.append({k: batch.final.get(k) for k in ("status", "total", "completed", "failed")})
        with tempfile.TemporaryDirectory(prefix="pixelmill-bench-cli-") as scratch:
            argv = pixelmill_argv(sources, Path(scratch) / "out", workers, Path(scratch) / "r.json")
            if quiet_wait_s:
                wait_for_quiet(max_wait_s=quiet_wait_s)
            cli = run_timed(argv)
        if cli.returncode != 0:
            raise RuntimeError(f"pixelmill run exited {cli.returncode}: {cli.stderr_tail[-300:]}")
        cli_seconds.append(cli.seconds)
        cli_noise.append(cli.others_cores)
        if log:
            print(
                f"  api round {index + 1}: api {batch.seconds:.2f}s "
                f"(upload {batch.upload_s:.2f}s, others {others:.1f} cores), "
                f"cli {cli.seconds:.2f}s (others {cli.others_cores:.1f} cores)",
                file=sys.stderr,
                flush=True,
            )
    complete = all(f["status"] == "completed" and f["completed"] == len(sources) for f in finals)
    api_median = statistics.median(api_seconds)
    cli_median = statistics.median(cli_seconds)
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    return {
        "rounds": rounds,
        "files": len(sources),
        "api_seconds": [round(s, 4) for s in api_seconds],
        "cli_seconds": [round(s, 4) for s in cli_seconds],
        "api_median_s": round(api_median, 4),
        "cli_median_s": round(cli_median, 4),
        "api_others_cores": [round(x, 2) for x in api_noise],
        "cli_others_cores": [round(x, 2) for x in cli_noise],
        "api_throughput_vs_cli": round(cli_median / api_median, 3),
        "throughput_target": ">= 0.9",
        "all_batches_completed": complete,
        "meets_throughput_target": complete and cli_median / api_median >= 0.9,
        "status_polls": len(latencies),
        "status_p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "status_p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "status_p99_target_ms": 20,
        "meets_latency_target": p99 is not None and p99 < 0.020,
        "final_status": finals,
    }


def run_upload_memory(sources: Sequence[Path], workers: int, log: bool = True) -> dict[str, object]:
    """Peak RSS of the server's process tree while it receives one many-file batch.

    Once the 202 is back the batch is cancelled: the point is the receiving side, and
    rendering every file would only add minutes.
    """
    with (
        running_server(workers) as server,
        httpx.Client(base_url=server.base_url, timeout=300.0) as client,
    ):
        baseline = TreeSampler(server.process.pid).sample()
        with TreeSampler(server.process.pid) as receiving:
            batch_id, upload_s = post_batch(client, sources)
        with TreeSampler(server.process.pid) as after:
            client.post(f"/v1/batches/{batch_id}/cancel")
            for _ in range(1200):
                status = client.get(f"/v1/batches/{batch_id}").json()
                if status.get("status") in FINAL_BATCH_STATES:
                    break
                time.sleep(0.05)
    total_bytes = sum(p.stat().st_size for p in sources)
    result = {
        "files": len(sources),
        "upload_bytes": total_bytes,
        "upload_mib": round(total_bytes / MiB, 1),
        "upload_s": round(upload_s, 3),
        "idle_rss_mib": round(baseline / MiB, 1),
        "peak_rss_receiving_mib": round(receiving.peak_bytes / MiB, 1),
        "peak_rss_until_cancelled_mib": round(after.peak_bytes / MiB, 1),
        "final_status": {
            k: status.get(k)
            for k in ("status", "total", "completed", "failed", "cancelled", "pending")
        },
    }
    if log:
        print(
            f"  api upload of {len(sources)} files ({total_bytes / MiB:.0f} MiB): "
            f"peak {receiving.peak_bytes / MiB:.0f} MiB while receiving",
            file=sys.stderr,
            flush=True,
        )
    return result
