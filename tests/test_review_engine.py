"""Review of the local engine: orphans after the engine is killed, a second Ctrl-C, a copy
whose batch is cancelled while its leader renders."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine_faults import (
    counting_task,
    crash_after_manifest_task,
    faulty_task,
    torn_result_task,
)
from pixelmill.states import ImageStatus
from test_engine import Run, make_photo
from test_engine_faults import starts_of

TESTS = Path(__file__).parent

ENGINE_OWNER = """
import hashlib, sys, time
from pathlib import Path
from pixelmill.core.specs import Limits, OutputFormat, RenderSpec
from pixelmill.engine.base import ImageJob
from pixelmill.engine.local import LocalEngine
from pixelmill.storage import LocalStorage
from engine_faults import (
    counting_task,
    crash_after_manifest_task,
    faulty_task,
    torn_result_task,
)

if __name__ == "__main__":
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    spec = RenderSpec(formats=(OutputFormat.JPEG,), limits=Limits(timeout_s=600))
    engine = LocalEngine(spec, LocalStorage(out), workers=2, memory_budget_bytes=640 << 20,
                         max_tasks_per_child=50, on_outcome=print,
                         task_function=counting_task).start()
    for name in ("gil.jpg", "hang.jpg"):
        photo = folder / name
        sha = hashlib.sha256(photo.read_bytes()).hexdigest()
        engine.submit(ImageJob(name, str(photo), sha))
    time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


def test_a_worker_stuck_holding_the_gil_dies_with_the_engine(tmp_path: Path) -> None:
    """SIGKILL of the engine's process ends every worker, even one that never runs Python
    again (native code holding the GIL), and with it the fork server and resource tracker."""
    psutil = pytest.importorskip("psutil")
    for name, seed in (("gil.jpg", 1), ("hang.jpg", 2)):
        make_photo(tmp_path / name, seed=seed)
    script = tmp_path / "engine_owner.py"
    script.write_text(ENGINE_OWNER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out"), str(tmp_path)], env=_env()
    )
    tree = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if starts_of(tmp_path / "gil.jpg") and starts_of(tmp_path / "hang.jpg"):
                break
            time.sleep(0.05)
        assert starts_of(tmp_path / "gil.jpg"), "the stuck image never started"
        time.sleep(0.3)  # the regex is running now
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 3, "expected a fork server and two workers"
    finally:
        proc.kill()
        proc.wait(10)
    killed = time.monotonic()
    _, alive = psutil.wait_procs(tree, timeout=15)
    took = time.monotonic() - killed
    for leftover in alive:
        leftover.kill()
    assert not alive, f"left running: {[p.cmdline()[-1][:60] for p in alive]}"
    print(f"every process of the engine gone {took:.2f} s after its SIGKILL")


def _interrupt_a_run(tmp_path: Path, stop: signal.Signals, group: bool) -> int:
    """Run ``pixelmill run`` on 24 photos and send ``stop`` (again and again, bounded) once
    it renders; check the report counts every file, no temp file or process is left; return
    the exit status."""
    psutil = pytest.importorskip("psutil")
    photos = tmp_path / "photos"
    photos.mkdir()
    count = 24
    for i in range(count):
        make_photo(photos / f"p{i:02}.jpg", (1600, 1200), seed=i)
    out, report = tmp_path / "out", tmp_path / "report.json"
    command = [sys.executable, "-m", "pixelmill", "run", str(photos), "-o", str(out)]
    command += ["--report", str(report), "--workers", "2", "--formats", "jpeg,webp"]
    proc = subprocess.Popen(command, env=_env(), start_new_session=True, stderr=subprocess.PIPE)
    tree = []
    try:
        deadline = time.monotonic() + 60
        while not list(out.rglob("*.jpg")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(out.rglob("*.jpg")), "nothing rendered"
        tree = psutil.Process(proc.pid).children(recursive=True)
        for _ in range(6):  # as an impatient user (or a supervisor) does
            if proc.poll() is not None:
                break
            if group:
                os.killpg(proc.pid, stop)
            else:
                proc.send_signal(stop)
            time.sleep(0.03)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
    assert report.exists(), f"no report: {stderr.decode()[-2000:]}"
    summary = json.loads(report.read_text())["summary"]
    statuses = ("done", "duplicate", "failed", "cancelled")
    assert summary["total"] == count, summary
    assert sum(summary[s] for s in statuses) == count, summary
    assert summary["cancelled"] > 0, summary
    assert list(out.rglob(".pixelmill-tmp-*")) == [], "temp files left behind"
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, "workers left running"
    return proc.returncode


def test_a_second_ctrl_c_still_cleans_up_and_reports_every_image(tmp_path: Path) -> None:
    """Ctrl-C pressed again while ``pixelmill run`` cleans up: exit 130, every file in the
    report (the counts add up), no temp file, no process left."""
    assert _interrupt_a_run(tmp_path, signal.SIGINT, group=True) == 130


@pytest.mark.parametrize("group", [False, True], ids=["process", "process-group"])
def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path: Path, group: bool) -> None:
    """SIGTERM (a supervisor, ``timeout``, a CI cancel) cleans up like Ctrl-C and exits 143;
    it used to kill the run half way: temp files and half an image's renditions left, no
    report."""
    assert _interrupt_a_run(tmp_path, signal.SIGTERM, group=group) == 143


def test_a_copy_whose_batch_is_cancelled_does_not_wait_for_its_leader(tmp_path: Path) -> None:
    """A copy waiting on another batch's render ends ``cancelled`` at its own batch's cancel,
    at once, not ``duplicate`` once the other batch's render is done."""
    leader = make_photo(tmp_path / "slow-a.jpg", (1600, 1200), seed=1)  # a second's sleep first
    copy = tmp_path / "copy.jpg"
    shutil.copy(leader, copy)
    run = Run(tmp_path / "out", task_function=counting_task)
    run.submit(leader, batch_id="A")
    deadline = time.monotonic() + 30
    while not run.started and time.monotonic() < deadline:
        time.sleep(0.01)
    run.submit(copy, batch_id="B")
    while len(run.engine._in_flight._followers) == 0:
        assert time.monotonic() < deadline, "the copy never waited for its leader"
        time.sleep(0.01)
    run.engine.cancel_batch("B")
    while not run.outcomes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.outcomes and run.outcomes[0].job.job_id == "copy.jpg", "the copy waited"
    results = run.finish()
    assert results["copy.jpg"].status is ImageStatus.CANCELLED
    assert results["copy.jpg"].error is not None
    assert results["copy.jpg"].error.code == "cancelled"
    assert results["slow-a.jpg"].status is ImageStatus.DONE
    assert starts_of(leader) == 1


def test_a_job_whose_worker_died_after_its_manifest_is_done_not_duplicate(
    tmp_path: Path,
) -> None:
    """The retry of a job whose first run finished the render (then its worker died before
    sending the result) reports ``done``: nobody else rendered that content."""
    photo = make_photo(tmp_path / "p.jpg", seed=7)
    run = Run(tmp_path / "out", task_function=crash_after_manifest_task)
    run.submit(photo)
    outcome = run.finish()["p.jpg"]
    assert photo.with_suffix(".crashed").exists(), "the worker never died"
    assert outcome.status is ImageStatus.DONE, outcome
    assert outcome.result is not None and outcome.result.renditions
    assert outcome.elapsed_s > 0, "a done image without its time"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_recycling_a_worker_per_task_leaks_no_descriptor_or_thread(tmp_path: Path) -> None:
    """A fresh worker for each of 100 images: descriptors and threads stay flat while it
    runs, and are all given back by ``shutdown`` (the engine object still referenced)."""
    photos = [make_photo(tmp_path / f"r{i}.jpg", (32, 24), seed=i) for i in range(100)]
    Run(tmp_path / "warm").finish()  # the fork server and its descriptors exist from now on
    threads_before, fds_before = threading.active_count(), _open_fds()
    samples: list[tuple[int, int]] = []
    run = Run(tmp_path / "out", workers=2, max_tasks_per_child=1)
    for wave in range(10):  # measured between waves: every worker recycled ten times over
        for photo in photos[wave * 10 : wave * 10 + 10]:
            run.submit(photo)
        assert run.engine.join(timeout=120)
        samples.append((_open_fds(), threading.active_count()))
    statuses = {o.status for o in run.finish().values()}
    assert statuses <= {ImageStatus.DONE, ImageStatus.DUPLICATE}
    fds, threads = [s[0] for s in samples], [s[1] for s in samples]
    print(
        f"descriptors while running {min(fds)}..{max(fds)}, threads {min(threads)}..{max(threads)}"
    )
    # A worker being replaced holds a few descriptors for a moment, so single samples wobble
    # by up to ~10; a leak of one descriptor per recycle would add 50 between the halves.
    growth = statistics.median(fds[5:]) - statistics.median(fds[:5])
    assert growth <= 6, f"descriptors grow with recycles: {fds}"
    assert max(fds) - min(fds) <= 24, f"descriptors grow with recycles: {fds}"
    assert max(threads) <= threads_before + 2 + 3, f"threads grow with recycles: {threads}"
    assert threading.active_count() == threads_before, "threads left after shutdown"
    assert _open_fds() == fds_before, "descriptors kept after shutdown"


def test_a_worker_that_dies_mid_message_costs_one_retry(tmp_path: Path) -> None:
    """Half a result on the pipe, then the worker's death: the job runs again and is done,
    the image beside it is untouched, nothing is reported twice."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", seed=20 + i) for i in range(2)]
    run = Run(tmp_path / "out", task_function=torn_result_task)
    for photo in photos:
        run.submit(photo)
    results = run.finish()
    assert all(p.with_suffix(".torn").exists() for p in photos), "no message was torn"
    assert {o.status for o in results.values()} == {ImageStatus.DONE}, results


def test_a_crash_is_described_by_its_signal_while_others_poll_children(tmp_path: Path) -> None:
    """``multiprocessing.active_children()`` called anywhere in the process (or the pool's
    own starts) must not steal a dead worker's exit status: the message names SIGKILL."""
    stop = threading.Event()

    def poll_children() -> None:
        while not stop.is_set():
            multiprocessing.active_children()

    poller = threading.Thread(target=poll_children, daemon=True)
    poller.start()
    run = Run(tmp_path / "out", task_function=faulty_task)
    try:
        for i in range(24):
            run.submit(make_photo(tmp_path / f"crash-always{i}.jpg", (48, 32), seed=i))
        results = run.finish()
    finally:
        stop.set()
        poller.join(10)
    messages = {o.error.message for o in results.values() if o.error is not None}
    assert messages == {"the worker process died twice on this image (killed by SIGKILL)"}
