"""Load: many concurrent uploaders against ``pixelmill serve`` on loopback, for a bounded time.

Each client loops: POST a small batch (new bytes and a copy of earlier bytes), then poll its
status until it is finished, checking the counts at every poll (``completed + failed +
cancelled + pending == total``, and at the end exactly what was sent). Reported: requests,
errors, count violations, POST and GET latency percentiles, and the server's RSS at start,
at its highest and at the end (its own process, where a leak would show, and the whole tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from PIL import Image, ImageDraw

from bench.api import running_server
from bench.procs import TreeSampler

DEFAULT_CLIENTS = 16
DEFAULT_SECONDS = 90.0
IMAGES_PER_BATCH = 2
POLL_INTERVAL_S = 0.1
REQUEST_TIMEOUT_S = 60.0
# After the load window, batches still rendering get this long to finish.
DRAIN_S = 120.0
RSS_INTERVAL_S = 0.5
MiB = 1024 * 1024


def small_jpeg(seed: int) -> bytes:
    """A 320x240 JPEG whose bytes differ per seed (quick to render)."""
    image = Image.new("RGB", (320, 240), (seed * 37 % 256, seed * 91 % 256, 120))
    ImageDraw.Draw(image).rectangle((0, 0, 100, 80), fill=(seed % 256, 40, 40))
    ImageDraw.Draw(image).point((seed % 320, seed // 320 % 240), fill=(1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@dataclass
class LoadStats:
    post_s: list[float] = field(default_factory=list)
    get_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    batches: int = 0
    images: int = 0

    def error(self, message: str) -> None:
        if len(self.errors) < 20:  # keep the first few, count them all
            self.errors.append(message)
        else:
            self.errors.append("")


def check_counts(status: dict[str, Any], sent: int) -> str | None:
    """What is wrong with a polled status, or None."""
    counted = status["completed"] + status["failed"] + status["cancelled"] + status["pending"]
    if status["total"] != sent:
        return f"total {status['total']} != {sent} sent"
    if counted != status["total"]:
        return f"counts {counted} != total {status['total']}"
    if not 0 <= status["duplicates"] <= status["completed"]:
        return f"duplicates {status['duplicates']} outside 0..{status['completed']}"
    return None


async def one_client(
    client: httpx.AsyncClient, seeds: itertools.count[int], stop_at: float, stats: LoadStats
) -> None:
    """Upload and follow batches until ``stop_at``; the last one is followed to its end."""
    while time.monotonic() < stop_at:
        seed = next(seeds)
        # One new image and one copy of an earlier one: rendering and de-duplication both.
        files = [
            ("files", (f"{seed}.jpg", small_jpeg(seed), "image/jpeg")),
            ("files", (f"{seed}-copy.jpg", small_jpeg(seed // 2), "image/jpeg")),
        ]
        started = time.perf_counter()
        try:
            response = await client.post("/v1/batches", files=files)
        except httpx.HTTPError as exc:
            stats.error(f"POST: {type(exc).__name__}: {exc}")
            continue
        stats.post_s.append(time.perf_counter() - started)
        if response.status_code != 202:
            stats.error(f"POST: {response.status_code} {response.text[:200]}")
            continue
        stats.batches += 1
        stats.images += IMAGES_PER_BATCH
        await follow(client, response.json()["batch_id"], stop_at + DRAIN_S, stats)


async def follow(
    client: httpx.AsyncClient, batch_id: str, give_up_at: float, stats: LoadStats
) -> None:
    while True:
        await asyncio.sleep(POLL_INTERVAL_S)
        started = time.perf_counter()
        try:
            response = await client.get(f"/v1/batches/{batch_id}")
        except httpx.HTTPError as exc:
            stats.error(f"GET: {type(exc).__name__}: {exc}")
            return
        stats.get_s.append(time.perf_counter() - started)
        if response.status_code != 200:
            stats.error(f"GET: {response.status_code} {response.text[:200]}")
            return
        status = response.json()
        problem = check_counts(status, IMAGES_PER_BATCH)
        if problem is not None:
            stats.violations.append(f"{batch_id}: {problem}")
        if status["status"] in ("completed", "cancelled") and status["pending"] == 0:
            if status["completed"] != IMAGES_PER_BATCH:
                stats.violations.append(f"{batch_id}: finished with {status}")
            return
        if time.monotonic() > give_up_at:
            stats.error(f"GET: batch {batch_id} not finished in time")
            return


async def sample_rss(pid: int, stop: asyncio.Event, readings: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            readings.append(process.memory_info().rss)
        except psutil.Error:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_INTERVAL_S)


async def drive(base_url: str, pid: int, clients: int, seconds: float) -> dict[str, Any]:
    stats = LoadStats()
    seeds = itertools.count(int(time.time()) % 100_000 * 1000)
    rss: list[int] = []
    stop_sampling = asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as client:
        sampler = asyncio.create_task(sample_rss(pid, stop_sampling, rss))
        started = time.monotonic()
        stop_at = started + seconds
        await asyncio.gather(*(one_client(client, seeds, stop_at, stats) for _ in range(clients)))
        elapsed = time.monotonic() - started
        await asyncio.sleep(2 * RSS_INTERVAL_S)  # the settled size, once every batch is over
        stop_sampling.set()
        await sampler
    requests = len(stats.post_s) + len(stats.get_s)
    return {
        "clients": clients,
        "seconds": seconds,
        "elapsed_s": round(elapsed, 1),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1) if elapsed else None,
        "batches": stats.batches,
        "images": stats.images,
        "errors": len(stats.errors),
        "first_errors": [e for e in stats.errors if e][:5],
        "count_violations": len(stats.violations),
        "first_violations": stats.violations[:5],
        "post_p50_ms": percentile_ms(stats.post_s, 50),
        "post_p99_ms": percentile_ms(stats.post_s, 99),
        "get_p50_ms": percentile_ms(stats.get_s, 50),
        "get_p99_ms": percentile_ms(stats.get_s, 99),
        "server_rss_start_mib": mib(rss[0]) if rss else None,
        "server_rss_max_mib": mib(max(rss)) if rss else None,
        "server_rss_end_mib": mib(rss[-1]) if rss else None,
    }


def percentile_ms(values: Sequence[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0] * 1000, 1) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)


def mib(value: int) -> float:
    return round(value / MiB, 1)


def run_load(
    workers: int, clients: int = DEFAULT_CLIENTS, seconds: float = DEFAULT_SECONDS
) -> dict[str, Any]:
    """Start a server, drive it for ``seconds`` with ``clients`` uploaders, report."""
    with running_server(workers) as server:
        with TreeSampler(server.process.pid) as tree:
            result = asyncio.run(drive(server.base_url, server.process.pid, clients, seconds))
        result["server_tree_peak_rss_mib"] = mib(tree.peak_bytes)
    result["ok"] = result["errors"] == 0 and result["count_violations"] == 0
    return result


def summary_line(result: dict[str, Any]) -> str:
    return (
        f"load: {result['clients']} clients x {result['seconds']:g} s: "
        f"{result['requests']} requests ({result['batches']} batches), "
        f"{result['errors']} errors, {result['count_violations']} count violations; "
        f"POST p99 {result['post_p99_ms']} ms, GET p99 {result['get_p99_ms']} ms; "
        f"server RSS {result['server_rss_start_mib']} -> max {result['server_rss_max_mib']} "
        f"-> end {result['server_rss_end_mib']} MiB "
        f"(tree peak {result['server_tree_peak_rss_mib']} MiB)"
    )


if __name__ == "__main__":  # python -m bench.load [seconds] [clients]
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SECONDS
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_CLIENTS
    print(summary_line(run_load(workers=2, clients=clients, seconds=seconds)))
