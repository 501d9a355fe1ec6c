"""One image, all idle cores: a 12-MP photo on an idle 2-worker service against 1 worker.

Issue 10's aim: ``POST /v1/images?wait=true`` of a 12-MP photo on an idle 2-worker service
answers in at most 0.85x the time the same service takes with 1 worker. With one image in
flight, a second worker helps only if the engine spreads that image's renditions over the
idle cores; this part measures the answer time either way and changes nothing.

Two ``pixelmill serve`` processes run side by side (``PIXELMILL_WORKERS`` 1 and 2, the
embedded defaults otherwise, each with its own fresh data dir), each warmed up first. Then,
round by round, one photo the services have not seen goes to one service and another to the
other, which one goes first alternating per round. Each request is timed by the client from
the start of the upload to the 200 answer.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import inputs
from bench.api import Server, run_batch, running_server
from bench.procs import CPU_INTERVAL_S, TreeSampler, busy_seconds, wait_for_quiet
from bench.speed import NOISE_LIMIT_CORES

ROUNDS = 9
QUICK_ROUNDS = 3
MAX_ROUNDS = 30
RATIO_AIM = 0.85
WAIT_S = 120  # ?timeout= of each waited upload (the API takes up to 300)
STAGES = ("read", "decode", "resize", "encode", "total")
WORKER_COUNTS = (1, 2)


@dataclass(frozen=True)
class Sample:
    """One waited upload: client wall time, the server tree's CPU, the image record."""

    photo: str
    seconds: float
    server_cpu_s: float
    others_cores: float
    record: dict[str, Any]

    @property
    def timings_ms(self) -> dict[str, float]:
        return dict(self.record.get("timings_ms") or {})


def post_waited(client: httpx.Client, server: Server, photo: Path) -> Sample:
    """``POST /v1/images?wait=true`` of ``photo``; the image must come back ``done``."""
    data = photo.read_bytes()  # read before the clock starts: only the request is timed
    sampler = TreeSampler(server.process.pid, CPU_INTERVAL_S)
    sampler.sample()
    cpu_before, own_before, busy_before = sampler.cpu_seconds, time.process_time(), busy_seconds()
    with sampler:
        started = time.perf_counter()
        response = client.post(
            "/v1/images",
            params={"wait": "true", "timeout": str(WAIT_S)},
            files={"file": (photo.name, data, "image/jpeg")},
        )
        seconds = time.perf_counter() - started
    sampler.sample()
    server_cpu = sampler.cpu_seconds - cpu_before
    own_cpu = time.process_time() - own_before
    others = max(0.0, busy_seconds() - busy_before - server_cpu - own_cpu) / seconds
    if response.status_code != 200:
        raise RuntimeError(f"POST /v1/images: {response.status_code} {response.text[:300]}")
    record = response.json()
    if record.get("status") != "done":
        raise RuntimeError(f"{photo.name}: {record.get('status')} {record.get('error')}")
    return Sample(photo.name, seconds, server_cpu, others, record)


def warm_up(client: httpx.Client, server: Server, photo: Path) -> None:
    """Two small photos as one batch (one for each worker, when there are two), then one
    waited 12-MP upload, as a running service would have done before."""
    run_batch(client, inputs.small_jpegs()[:2])
    post_waited(client, server, photo)


def run_idle(rounds: int, quiet_wait_s: float, log: bool = True) -> dict[str, Any]:
    """Alternate waited uploads between a 1-worker and a 2-worker service; summarise."""
    rounds = max(1, min(rounds, MAX_ROUNDS))
    photos = inputs.twelve_mp_jpegs(2 * rounds + len(WORKER_COUNTS))
    measured, warm = photos[: 2 * rounds], photos[2 * rounds :]
    samples: dict[int, list[Sample]] = {w: [] for w in WORKER_COUNTS}
    manifest: dict[str, Any] | None = None
    with ExitStack() as stack:
        servers = {w: stack.enter_context(running_server(w)) for w in WORKER_COUNTS}
        clients = {
            w: stack.enter_context(httpx.Client(base_url=s.base_url, timeout=WAIT_S + 30.0))
            for w, s in servers.items()
        }
        for (w, client), photo in zip(clients.items(), warm, strict=True):
            warm_up(client, servers[w], photo)
        for index in range(rounds):
            order = WORKER_COUNTS if index % 2 == 0 else WORKER_COUNTS[::-1]
            for slot, workers in enumerate(order):
                if quiet_wait_s:
                    wait_for_quiet(max_wait_s=quiet_wait_s)
                photo = measured[2 * index + slot]
                samples[workers].append(post_waited(clients[workers], servers[workers], photo))
            if manifest is None:
                manifest = _manifest(clients[1], samples[1][0].record["sha256"])
            if log:
                one, two = samples[1][-1], samples[2][-1]
                print(
                    f"  idle round {index + 1}: 1 worker {one.seconds:.3f}s "
                    f"(others {one.others_cores:.2f} cores), 2 workers {two.seconds:.3f}s "
                    f"(others {two.others_cores:.2f} cores): {two.seconds / one.seconds:.3f}x",
                    file=sys.stderr,
                    flush=True,
                )
    return summarise(samples, manifest)


def _manifest(client: httpx.Client, sha256: str) -> dict[str, Any]:
    response = client.get(f"/v1/images/{sha256}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _side(samples: Sequence[Sample]) -> dict[str, Any]:
    """Medians of one service's requests, and where the time went."""
    quiet = [s for s in samples if s.others_cores < NOISE_LIMIT_CORES]
    stages = {
        stage: _median([s.timings_ms[stage] for s in samples if stage in s.timings_ms])
        for stage in STAGES
    }
    outside = [s.seconds * 1000 - s.timings_ms["total"] for s in samples if "total" in s.timings_ms]
    return {
        "seconds": [round(s.seconds, 4) for s in samples],
        "median_s": round(statistics.median(s.seconds for s in samples), 4),
        "quiet_requests": len(quiet),
        "quiet_median_s": None if not quiet else round(_median([s.seconds for s in quiet]) or 0, 4),
        "others_cores": [round(s.others_cores, 2) for s in samples],
        # Server CPU per second of answer time: above 1, the image used more than one core.
        "median_cores_used": round(
            statistics.median(s.server_cpu_s / s.seconds for s in samples), 2
        ),
        "stages_median_ms": {k: None if v is None else round(v, 1) for k, v in stages.items()},
        "outside_render_median_ms": None if not outside else round(statistics.median(outside), 1),
        "renditions": len(samples[0].record.get("renditions") or []),
        "photos": [s.photo for s in samples],
    }


def summarise(samples: dict[int, list[Sample]], manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON of the part: both sides, the ratio (2 workers / 1 worker) and its verdict."""
    one, two = _side(samples[1]), _side(samples[2])
    enough_quiet = (len(samples[1]) + 1) // 2
    quiet = one["quiet_requests"] >= enough_quiet and two["quiet_requests"] >= enough_quiet
    basis = "quiet requests" if quiet else "all requests"
    m1, m2 = (
        (one["quiet_median_s"], two["quiet_median_s"])
        if quiet
        else (one["median_s"], two["median_s"])
    )
    ratio = m2 / m1
    paired = statistics.median(
        b.seconds / a.seconds for a, b in zip(samples[1], samples[2], strict=True)
    )
    stages = one["stages_median_ms"]
    # The 1-worker render is serial: read + decode, then resize + encode of every rendition.
    # Were resize + encode split evenly over two cores, the answer would shrink by half of
    # them: a rough bound on what spreading renditions can reach (decode is not split).
    split: float | None = None
    if stages["resize"] is not None and stages["encode"] is not None:
        spreadable_s = (stages["resize"] + stages["encode"]) / 1000
        split = round((one["median_s"] - spreadable_s / 2) / one["median_s"], 3)
    source = (manifest or {}).get("source") or {}
    width, height = inputs.TWELVE_MP_SIZE
    return {
        "rounds": len(samples[1]),
        "photo": f"{width}x{height} JPEG q{inputs.TWELVE_MP_QUALITY}",
        "source": {k: source.get(k) for k in ("format", "width", "height", "bytes")},
        "one_worker": one,
        "two_workers": two,
        "basis": basis,
        "ratio": round(ratio, 3),
        "ratio_all_requests": round(two["median_s"] / one["median_s"], 3),
        "ratio_paired": round(paired, 3),
        "ratio_aim": f"<= {RATIO_AIM}",
        "meets_aim": ratio <= RATIO_AIM,
        "ratio_if_split_evenly": split,
        "noise_limit_cores": NOISE_LIMIT_CORES,
    }
