"""The local engine, for real: worker processes, crashes, timeouts, cancellation, dedupe."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from engine_faults import faulty_task, pid_recording_task
from pixelmill.core.specs import Limits, OutputFormat, RenderSpec
from pixelmill.engine.base import ImageJob, ImageOutcome
from pixelmill.engine.local import LocalEngine
from pixelmill.states import ImageStatus
from pixelmill.storage import LocalStorage

SMALL_SPEC = RenderSpec(formats=(OutputFormat.JPEG,))


def make_photo(path: Path, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """A small RGB image whose bytes differ per seed."""
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, 120))
    for x in range(0, size[0], 16):
        image.paste((x % 256, seed % 256, 255 - x % 256), (x, 0, x + 8, size[1]))
    image.save(path, "JPEG", quality=90)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Run:
    """An engine plus everything it reported, for assertions."""

    def __init__(self, out: Path, spec: RenderSpec = SMALL_SPEC, **kwargs: object) -> None:
        self.outcomes: list[ImageOutcome] = []
        self.started: list[ImageJob] = []
        self.storage = LocalStorage(out)
        self._lock = threading.Lock()
        options: dict[str, object] = {
            "workers": 2,
            "memory_budget_bytes": 640 << 20,
            "max_tasks_per_child": 50,
            "work_dir": out / "engine",
        }
        options.update(kwargs)
        self.engine = LocalEngine(
            spec,
            self.storage,
            on_outcome=self._outcome,
            on_start=self._start,
            **options,  # type: ignore[arg-type]
        ).start()

    def _outcome(self, outcome: ImageOutcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _start(self, job: ImageJob) -> None:
        with self._lock:
            self.started.append(job)

    def submit(self, path: Path, batch_id: str = "b") -> None:
        self.engine.submit(ImageJob(path.name, str(path), sha256_of(path), batch_id))

    def finish(self) -> dict[str, ImageOutcome]:
        assert self.engine.join(timeout=120), "engine did not finish"
        self.engine.shutdown()
        by_name = {o.job.job_id: o for o in self.outcomes}
        assert len(by_name) == len(self.outcomes), "an outcome was reported twice"
        return by_name


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "out"
    folder.mkdir()
    yield folder
    leftovers = [p for p in folder.rglob(".pixelmill-tmp-*")]
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert not list((folder / "engine").glob("engine-*")), "engine work folder left behind"


def test_renders_every_image_and_dedupes_copies(tmp_path: Path, out: Path) -> None:
    """Distinct images are done; byte-identical copies in the same run are duplicates."""
    src = tmp_path / "src"
    src.mkdir()
    photos = [make_photo(src / f"p{i}.jpg", seed=i) for i in range(6)]
    copies = [src / f"copy{i}.jpg" for i in range(3)]
    for copy in copies:
        shutil.copy(photos[0], copy)
    run = Run(out)
    for path in photos + copies:
        run.submit(path)
    results = run.finish()
    assert {results[p.name].status for p in photos} == {ImageStatus.DONE}
    assert {results[c.name].status for c in copies} == {ImageStatus.DUPLICATE}
    copy_result, first_result = results["copy0.jpg"].result, results["p0.jpg"].result
    assert copy_result is not None and first_result is not None
    assert copy_result.renditions == first_result.renditions
    names = sorted(p.name for p in run.storage.image_dir(sha256_of(photos[0])).iterdir())
    assert names == ["large.jpg", "manifest.json", "medium.jpg", "thumbnail.jpg"]


def test_rerun_is_all_duplicates_and_new_formats_render_only_whats_missing(
    tmp_path: Path, out: Path
) -> None:
    """A second run over the same bytes renders nothing; adding a format renders just it."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(3)]
    first = Run(out)
    for path in photos:
        first.submit(path)
    first.finish()
    again = Run(out)
    for path in photos:
        again.submit(path)
    assert {o.status for o in again.finish().values()} == {ImageStatus.DUPLICATE}
    assert again.started == [], "a duplicate must not reach a worker"

    folder = again.storage.image_dir(sha256_of(photos[0]))
    jpeg_mtime = (folder / "large.jpg").stat().st_mtime_ns
    wider = Run(out, RenderSpec(formats=(OutputFormat.JPEG, OutputFormat.WEBP)))
    wider.submit(photos[0])
    outcome = wider.finish()["p0.jpg"]
    assert outcome.status is ImageStatus.DONE
    assert outcome.result is not None
    assert len(outcome.result.renditions) == 6, "the manifest lists old and new renditions"
    assert (folder / "large.webp").read_bytes()[8:12] == b"WEBP"
    assert (folder / "large.jpg").stat().st_mtime_ns == jpeg_mtime, "JPEGs were re-rendered"


def test_worker_killed_twice_by_one_image_is_worker_crashed(tmp_path: Path, out: Path) -> None:
    """An image that kills its worker twice fails worker_crashed; the rest are done."""
    good = [make_photo(tmp_path / f"good{i}.jpg", seed=i) for i in range(5)]
    bad = make_photo(tmp_path / "crash-always.jpg", seed=99)
    run = Run(out, task_function=faulty_task)
    for path in [good[0], bad, *good[1:]]:
        run.submit(path)
    results = run.finish()
    assert results[bad.name].status is ImageStatus.FAILED
    assert results[bad.name].error is not None
    assert results[bad.name].error.code == "worker_crashed"
    assert {results[p.name].status for p in good} == {ImageStatus.DONE}


def test_worker_that_dies_once_is_retried(tmp_path: Path, out: Path) -> None:
    """A worker death that does not repeat costs a retry, not the image."""
    flaky = make_photo(tmp_path / "crash-once.jpg", seed=5)
    others = [make_photo(tmp_path / f"ok{i}.jpg", seed=10 + i) for i in range(3)]
    run = Run(out, task_function=faulty_task)
    for path in [flaky, *others]:
        run.submit(path)
    results = run.finish()
    assert {o.status for o in results.values()} == {ImageStatus.DONE}
    assert (tmp_path / "crash-once.crashed").exists(), "the fault never fired"


def test_image_over_its_time_limit_is_timeout(tmp_path: Path, out: Path) -> None:
    """A hanging image fails `timeout`, its worker is replaced, and others still render."""
    spec = RenderSpec(formats=(OutputFormat.JPEG,), limits=Limits(timeout_s=1.5))
    hang = make_photo(tmp_path / "hang.jpg", seed=1)
    others = [make_photo(tmp_path / f"ok{i}.jpg", seed=20 + i) for i in range(4)]
    run = Run(out, spec, task_function=faulty_task)
    started = time.monotonic()
    for path in [hang, *others]:
        run.submit(path)
    results = run.finish()
    assert results["hang.jpg"].status is ImageStatus.FAILED
    assert results["hang.jpg"].error is not None
    assert results["hang.jpg"].error.code == "timeout"
    assert {results[p.name].status for p in others} == {ImageStatus.DONE}
    assert time.monotonic() - started < 30


def test_worker_stuck_holding_the_gil_is_ended_by_the_backstop(tmp_path: Path, out: Path) -> None:
    """A worker too stuck to run its watchdog is killed by the parent and reported timeout."""
    spec = RenderSpec(formats=(OutputFormat.JPEG,), limits=Limits(timeout_s=1.0))
    stuck = make_photo(tmp_path / "gil.jpg", seed=1)
    ok = make_photo(tmp_path / "ok.jpg", seed=2)
    run = Run(out, spec, task_function=faulty_task)
    run.submit(stuck)
    run.submit(ok)
    results = run.finish()
    assert results["gil.jpg"].error is not None
    assert results["gil.jpg"].error.code == "timeout"
    assert results["ok.jpg"].status is ImageStatus.DONE


def test_cancel_stops_new_images_from_starting(tmp_path: Path, out: Path) -> None:
    """After cancel_batch returns, no job of that batch starts; other batches carry on."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", (1600, 1200), seed=i) for i in range(16)]
    other = make_photo(tmp_path / "other.jpg", seed=77)
    run = Run(out, RenderSpec())
    for path in photos:
        run.submit(path, batch_id="doomed")
    deadline = time.monotonic() + 30
    while not run.outcomes and time.monotonic() < deadline:
        time.sleep(0.01)
    run.engine.cancel_batch("doomed")
    started_at_cancel = len(run.started)
    run.submit(other, batch_id="kept")
    results = run.finish()
    assert len(run.started) == started_at_cancel + 1, "a cancelled batch's job started"
    statuses = [results[p.name].status for p in photos]
    assert ImageStatus.CANCELLED in statuses
    assert set(statuses) <= {ImageStatus.DONE, ImageStatus.CANCELLED}
    assert results["other.jpg"].status is ImageStatus.DONE


def test_memory_budget_keeps_big_images_one_at_a_time(tmp_path: Path, out: Path) -> None:
    """Images whose decode cost exceeds the budget together never run side by side."""
    big = []
    for i in range(3):
        path = tmp_path / f"big{i}.png"
        Image.new("RGB", (3000, 3000), (i * 40, 10, 10)).save(path, compress_level=1)
        big.append(path)
    in_flight, peak = 0, 0
    lock = threading.Lock()
    run = Run(out, memory_budget_bytes=48 << 20)

    def on_start(job: ImageJob) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)

    def on_outcome(outcome: ImageOutcome) -> None:
        nonlocal in_flight
        with lock:
            in_flight -= 1
            run.outcomes.append(outcome)

    run.engine._on_start = on_start  # count concurrency at the engine's own callbacks
    run.engine._on_outcome = on_outcome
    for path in big:
        run.submit(path)
    results = run.finish()
    assert {o.status for o in results.values()} == {ImageStatus.DONE}
    assert peak == 1

    in_flight, peak = 0, 0
    small_run = Run(out, memory_budget_bytes=640 << 20)
    small_run.engine._on_start = on_start
    small_run.engine._on_outcome = on_outcome
    run = small_run  # on_outcome appends to run.outcomes
    photos = [make_photo(tmp_path / f"s{i}.jpg", (2400, 1800), seed=50 + i) for i in range(6)]
    for path in photos:
        small_run.submit(path)
    assert {o.status for o in small_run.finish().values()} == {ImageStatus.DONE}
    assert peak == 2, "ordinary photos should use both workers at once"


def test_read_only_output_fails_images_cleanly(tmp_path: Path) -> None:
    """An unwritable output folder fails each image with a clear error; nothing crashes."""
    out = tmp_path / "readonly"
    out.mkdir()
    photo = make_photo(tmp_path / "p.jpg")
    locked = _make_read_only(out)
    try:
        run = Run(out, work_dir=tmp_path / "engine")
        run.submit(photo)
        outcome = run.finish()["p.jpg"]
    finally:
        _undo_read_only(out, locked)
    assert outcome.status is ImageStatus.FAILED
    assert outcome.error is not None
    assert "cannot write renditions" in outcome.error.message
    assert not list(out.rglob("*")), "something was written into a read-only folder"


def _make_read_only(folder: Path) -> str:
    if os.geteuid() == 0:  # root ignores permission bits: make the folder immutable instead
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        return "chattr"
    folder.chmod(0o555)
    return "chmod"


def _undo_read_only(folder: Path, how: str) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


ORPHAN_SCRIPT = """
import hashlib, sys, time
from pathlib import Path
from pixelmill.core.specs import RenderSpec
from pixelmill.engine.base import ImageJob
from pixelmill.engine.local import LocalEngine
from pixelmill.storage import LocalStorage

if __name__ == "__main__":
    out, photo = Path(sys.argv[1]), sys.argv[2]
    done = []
    engine = LocalEngine(RenderSpec(), LocalStorage(out), workers=2,
                         memory_budget_bytes=640 << 20, max_tasks_per_child=50,
                         work_dir=out / "engine", on_outcome=done.append).start()
    sha = hashlib.sha256(Path(photo).read_bytes()).hexdigest()
    engine.submit(ImageJob("1", photo, sha))
    engine.join()
    print("ready", flush=True)
    time.sleep(600)
"""


def test_workers_exit_when_the_engine_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the engine's process leaves no worker or fork server behind."""
    psutil = pytest.importorskip("psutil")
    photo = make_photo(tmp_path / "p.jpg")
    script = tmp_path / "engine_owner.py"
    script.write_text(ORPHAN_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out"), str(photo)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 3, "expected a fork server and two workers"
    finally:
        proc.kill()
        proc.wait(10)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, f"left behind: {[p.cmdline()[:3] for p in alive]}"


class _BrokenStorage(LocalStorage):
    """A storage whose look-up raises: stands for any bug inside the dispatcher."""

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]:
        raise RuntimeError("storage exploded")


def test_a_dispatcher_bug_fails_the_jobs_instead_of_hanging(tmp_path: Path, out: Path) -> None:
    """If the dispatcher dies, every job still gets an outcome and join() returns."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(3)]
    outcomes: list[ImageOutcome] = []
    engine = LocalEngine(
        SMALL_SPEC,
        _BrokenStorage(out),
        workers=2,
        memory_budget_bytes=640 << 20,
        max_tasks_per_child=50,
        work_dir=out / "engine",
        on_outcome=outcomes.append,
    ).start()
    for path in photos:
        engine.submit(ImageJob(path.name, str(path), sha256_of(path)))
    assert engine.join(timeout=30), "join() hung after the dispatcher died"
    engine.shutdown()
    assert sorted(o.job.job_id for o in outcomes) == sorted(p.name for p in photos)
    assert {o.error.code for o in outcomes if o.error} == {"internal"}


def test_workers_are_recycled_after_max_tasks_per_child(tmp_path: Path, out: Path) -> None:
    """With max_tasks_per_child=2, six images need at least three worker processes."""
    photos = [make_photo(tmp_path / f"r{i}.jpg", seed=70 + i) for i in range(6)]
    run = Run(out, max_tasks_per_child=2, task_function=pid_recording_task)
    for path in photos:
        run.submit(path)
    assert {o.status for o in run.finish().values()} == {ImageStatus.DONE}
    pids = {path.with_suffix(".pid").read_text() for path in photos}
    assert len(pids) >= 3
