"""Run a contender as a subprocess: wall time, exit code, and the peak RSS of its process tree."""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_INTERVAL_S = 0.02
CPU_INTERVAL_S = 0.1


class TreeSampler:
    """Samples a process and all its descendants every ``interval_s``.

    Keeps the peak of the summed RSS (the sum counts pages a parent shares with its forked
    children once per process, so it over-states real use slightly: the conservative
    reading) and each process's last-seen CPU time, which also covers workers that nobody
    reaps (those never show up in ``getrusage(RUSAGE_CHILDREN)``).
    """

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self._cpu_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        """User + system seconds of every process seen in the tree, as last sampled."""
        return sum(self._cpu_by_pid.values())

    def sample(self) -> int:
        """One reading of the tree's summed RSS (0 once the root is gone)."""
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for process in tree:
            try:
                with process.oneshot():
                    total += process.memory_info().rss
                    times = process.cpu_times()
            except psutil.Error:
                continue  # exited between listing and reading
            self._cpu_by_pid[process.pid] = times.user + times.system
        self.peak_processes = max(self.peak_processes, len(tree))
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.sample())
            self.samples += 1
            self._stop.wait(self.interval_s)


@dataclass(frozen=True)
class RunResult:
    """One timed subprocess run.

    ``cpu_s`` is the user + system time of the process tree; ``others_cores`` is how many
    cores everything else on the machine kept busy meanwhile (noise, on a shared box).
    """

    seconds: float
    returncode: int
    peak_rss_bytes: int | None
    stderr_tail: str
    cpu_s: float = 0.0
    others_cores: float = 0.0


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(
    max_busy_cores: float = 0.3, max_wait_s: float = 20.0, window_s: float = 0.5
) -> float:
    """Wait (bounded) until the rest of the machine uses under ``max_busy_cores``.

    Returns the seconds waited. Other people's work on a shared machine is the main source
    of noise; waiting it out beats averaging it in.
    """
    started = time.monotonic()
    cores = psutil.cpu_count() or 1
    while time.monotonic() - started < max_wait_s:
        if psutil.cpu_percent(interval=window_s) / 100 * cores < max_busy_cores:
            break
    return time.monotonic() - started


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    sample_rss: bool = False,
    cwd: Path | None = None,
    timeout_s: float = 900.0,
) -> RunResult:
    """Run ``argv`` to completion; time it from spawn to exit.

    The tree is sampled every 20 ms when ``sample_rss`` (for the memory peak), else every
    100 ms, for CPU time only, so the sampler hardly taxes the contenders being timed.
    """
    busy_before, cpu_before = busy_seconds(), _children_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = TreeSampler(process.pid, SAMPLE_INTERVAL_S if sample_rss else CPU_INTERVAL_S)
    sampler.__enter__()
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    finally:
        sampler.stop()
    seconds = time.perf_counter() - started
    # Reaped descendants are exact in rusage; unreaped workers are only in the samples.
    cpu_s = max(_children_cpu_seconds() - cpu_before, sampler.cpu_seconds)
    others = max(0.0, busy_seconds() - busy_before - cpu_s) / seconds if seconds else 0.0
    return RunResult(
        seconds=seconds,
        returncode=process.returncode,
        peak_rss_bytes=sampler.peak_bytes if sample_rss else None,
        stderr_tail=(stderr or "")[-2000:],
        cpu_s=cpu_s,
        others_cores=others,
    )
