"""The engine under real faults: crashes and timeouts cost only their image, fairness,
an image that breaks the engine's own process, cancelled leftovers, a full disk."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import mounted_tmpfs
from engine_faults import cancel_midway_task, counting_task, crash_after_render_task
from pixelmill.core.specs import Limits, OutputFormat, RenderSpec
from pixelmill.engine.base import ImageJob
from pixelmill.states import ImageStatus
from pixelmill.storage import remove_unlisted_renditions
from test_engine import Run, make_photo, sha256_of


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    """The output folder; afterwards it must hold no temp file and no engine work folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    yield folder
    assert list(folder.rglob(".pixelmill-tmp-*")) == [], "temp files left behind"
    assert not list((folder / "engine").glob("*")), "engine files left behind"


def starts_of(path: Path) -> int:
    """How many times a worker started ``path`` (see ``counting_task``)."""
    starts = path.with_suffix(".starts")
    return len(starts.read_text().splitlines()) if starts.exists() else 0


def test_a_crash_costs_only_its_own_image(tmp_path: Path, out: Path) -> None:
    """Images in flight when another worker dies finish on their first run (item 11)."""
    slow = [make_photo(tmp_path / f"slow{i}.jpg", seed=i) for i in range(4)]
    crash = make_photo(tmp_path / "crash-always.jpg", seed=40)
    run = Run(out, task_function=counting_task)
    for path in [slow[0], crash, *slow[1:]]:
        run.submit(path)
    results = run.finish()
    assert results[crash.name].error is not None
    assert results[crash.name].error.code == "worker_crashed"
    assert starts_of(crash) == 2, "two deaths are conclusive: no third run"
    assert {results[p.name].status for p in slow} == {ImageStatus.DONE}
    assert [starts_of(p) for p in slow] == [1, 1, 1, 1], "an innocent image was rendered twice"
    assert not run.storage.image_dir(sha256_of(crash)).exists(), "the crash left files"


def test_a_timeout_costs_only_its_own_image(tmp_path: Path, out: Path) -> None:
    """A hang is killed at its limit while the images beside it keep their progress."""
    # Room for a slow image (1 s, then a small render) on a loaded machine, not for a hang.
    spec = RenderSpec(formats=(OutputFormat.JPEG,), limits=Limits(timeout_s=4.0))
    slow = [make_photo(tmp_path / f"slow{i}.jpg", seed=i) for i in range(3)]
    hang = make_photo(tmp_path / "hang.jpg", seed=41)
    run = Run(out, spec, task_function=counting_task)
    for path in [hang, *slow]:
        run.submit(path)
    results = run.finish()
    assert results[hang.name].error is not None
    assert results[hang.name].error.code == "timeout"
    assert starts_of(hang) == 1, "a timeout is not retried"
    assert [starts_of(p) for p in slow] == [1, 1, 1]
    assert {results[p.name].status for p in slow} == {ImageStatus.DONE}


def test_a_killed_worker_leaves_no_unlisted_rendition(tmp_path: Path, out: Path) -> None:
    """Renditions written by a worker that then died are removed by the engine (item 5)."""
    photo = make_photo(tmp_path / "p.jpg", seed=3)
    run = Run(out, task_function=crash_after_render_task)
    run.submit(photo)
    outcome = run.finish()["p.jpg"]
    assert outcome.error is not None and outcome.error.code == "worker_crashed"
    folder = run.storage.image_dir(sha256_of(photo))
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_cancelled_image_keeps_no_rendition(tmp_path: Path, out: Path) -> None:
    """An image cancelled after writing its first rendition leaves nothing (item 5)."""
    photo = make_photo(tmp_path / "p.jpg", (1600, 1200), seed=4)
    run = Run(out, RenderSpec(), task_function=cancel_midway_task)
    run.submit(photo, batch_id="doomed")
    midway = photo.with_suffix(".midway")
    deadline = time.monotonic() + 60
    while not midway.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert midway.exists(), "the render never reached its first rendition"
    folder = run.storage.image_dir(sha256_of(photo))
    assert list(folder.glob("large.*")), "nothing was written before the cancel"
    run.engine.cancel_batch("doomed")
    outcome = run.finish()["p.jpg"]
    assert outcome.status is ImageStatus.CANCELLED
    assert outcome.error is not None and outcome.error.code == "cancelled"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_only_unlisted_renditions_are_removed(tmp_path: Path) -> None:
    """What the manifest lists stays; what it does not (and temp files) goes."""
    folder = tmp_path / "image"
    folder.mkdir()
    for name in ("large.jpg", "medium.jpg", ".pixelmill-tmp-x", "other.txt"):
        (folder / name).write_bytes(b"x")
    manifest = folder / "manifest.json"
    manifest.write_text('{"renditions": [{"path": "large.jpg"}]}')
    assert remove_unlisted_renditions(folder, {"large.jpg", "medium.jpg"}) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["large.jpg", "manifest.json", "other.txt"]
    manifest.write_text('{"renditions": "not a list"}')  # cannot tell what it lists: keep
    assert remove_unlisted_renditions(folder, {"large.jpg"}) == 0
    assert (folder / "large.jpg").exists()
    manifest.unlink()
    (folder / "other.txt").unlink()
    assert remove_unlisted_renditions(folder, {"large.jpg"}) == 1
    assert not folder.exists(), "an emptied folder stays behind"


def test_every_cancelled_outcome_carries_the_cancelled_error(tmp_path: Path, out: Path) -> None:
    """Queued, in-flight and copies: a cancelled outcome always says ``cancelled``."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", (1200, 900), seed=i) for i in range(8)]
    copy = tmp_path / "copy.jpg"
    shutil.copy(photos[0], copy)
    run = Run(out, RenderSpec())
    for path in [*photos, copy]:
        run.submit(path, batch_id="doomed")
    run.engine.cancel_batch("doomed")
    results = run.finish()
    cancelled = [o for o in results.values() if o.status is ImageStatus.CANCELLED]
    assert cancelled, "nothing was cancelled"
    assert all(o.error is not None and o.error.code == "cancelled" for o in cancelled)


def test_a_lone_image_is_not_starved_by_a_big_batch(tmp_path: Path, out: Path) -> None:
    """An image posted alone starts as soon as a worker frees up (item 8)."""
    big = [make_photo(tmp_path / f"big{i}.jpg", (1600, 1200), seed=i) for i in range(40)]
    lone = make_photo(tmp_path / "lone.jpg", (320, 240), seed=99)
    run = Run(out, RenderSpec(formats=(OutputFormat.JPEG, OutputFormat.WEBP)))
    for path in big:
        run.submit(path, batch_id="big")
    deadline = time.monotonic() + 60
    while len(run.started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started_before = len(run.started)
    run.submit(lone, batch_id="lone")
    results = run.finish()
    assert results["lone.jpg"].status is ImageStatus.DONE
    order = [job.job_id for job in run.started]
    big_in_between = order.index("lone.jpg") - started_before
    assert big_in_between <= run.engine.workers, f"{big_in_between} big images went first"


def test_an_unreadable_image_folder_fails_that_image_only(tmp_path: Path, out: Path) -> None:
    """A manifest that cannot be read fails its image; the engine goes on (item 9)."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(3)]
    run = Run(out)
    broken = run.storage.image_dir(sha256_of(photos[0])) / "manifest.json"
    broken.mkdir(parents=True)  # reading it raises IsADirectoryError
    for path in photos:
        run.submit(path)
    assert run.engine.join(timeout=60)
    assert run.engine.is_alive(), "one image's error stopped the engine"
    results = run.finish()
    assert results["p0.jpg"].error is not None
    assert results["p0.jpg"].error.code == "internal"
    assert "manifest.json" in results["p0.jpg"].error.message
    assert results["p1.jpg"].status is ImageStatus.DONE
    assert results["p2.jpg"].status is ImageStatus.DONE


def test_a_source_that_vanished_or_cannot_be_opened_fails_corrupt_image(
    tmp_path: Path, out: Path
) -> None:
    """A source deleted after submit, or one that is a folder, is that image's failure (item 9)."""
    gone = make_photo(tmp_path / "gone.jpg", seed=1)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    ok = make_photo(tmp_path / "ok.jpg", seed=2)
    run = Run(out)
    gone_sha = sha256_of(gone)
    gone.unlink()
    run.engine.submit(ImageJob("gone.jpg", str(gone), gone_sha, "b"))
    run.engine.submit(ImageJob("folder.jpg", str(folder), "ab" * 32, "b"))
    run.submit(ok)
    assert run.engine.join(timeout=60)
    assert run.engine.is_alive()
    results = run.finish()
    for name in ("gone.jpg", "folder.jpg"):
        error = results[name].error
        assert error is not None and error.code == "corrupt_image", (name, error)
        assert error.message.startswith("cannot read the file"), error.message
    assert results["ok.jpg"].status is ImageStatus.DONE


def test_cancels_leave_no_files_and_are_forgotten(tmp_path: Path, out: Path) -> None:
    """Cancelling thousands of batches writes no file and keeps a bounded memory (item 16)."""
    run = Run(out)
    photo = make_photo(tmp_path / "p.jpg", seed=5)
    for i in range(3000):
        run.engine.cancel_batch(f"batch-{i}")
    sha = sha256_of(photo)
    # Cancelled a moment ago (a resume cancels before it feeds): still cancelled.
    run.engine.submit(ImageJob("late", str(photo), sha, "batch-2999"))
    run.engine.submit(ImageJob("kept", str(photo), sha, "kept"))
    assert run.engine.join(timeout=60)
    assert {o.job.job_id: o.status.value for o in run.outcomes} == {
        "late": "cancelled",
        "kept": "done",
    }
    assert run.engine._cancels.size() <= 1100, "every cancelled id is kept"
    work_dir = out / "engine"
    leftovers = list(work_dir.rglob("*")) if work_dir.exists() else []
    assert leftovers == [], f"cancel files written: {len(leftovers)}"
    run.finish()


def test_flag_folders_of_earlier_versions_are_removed(tmp_path: Path, out: Path) -> None:
    """Cancel-flag folders a dead engine of an earlier version left in work_dir go at start."""
    work_dir = out / "engine"
    dead = work_dir / "engine-999999999-0a1b2c3d"  # no such process
    (dead / "cancel").mkdir(parents=True)
    (dead / "cancel" / "flag").touch()
    alive = tmp_path / "elsewhere" / f"engine-{os.getpid()}-0a1b2c3d"
    alive.mkdir(parents=True)
    Run(out).finish()
    Run(out, work_dir=alive.parent).finish()
    assert not dead.exists()
    assert alive.exists(), "a live process's folder was removed"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test: a data dir that fills up for real."""
    with mounted_tmpfs(tmp_path / "small-disk", 2) as folder:
        yield folder


def noisy_photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A photo of noise: its renditions compress badly, so they need real room on disk."""
    noise = random.Random(seed).randbytes(size[0] * size[1] * 3)
    Image.frombytes("RGB", size, noise).save(path, "JPEG", quality=95)
    return path


def test_a_full_disk_fails_insufficient_storage_and_leaves_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    """ENOSPC while writing renditions: a clear code, no partial file; with room it renders."""
    photo = noisy_photo(tmp_path / "noise.jpg", (1000, 750), seed=6)  # ~0.9 MB of JPEGs
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - 700_000))  # room for the large JPEG, not the medium
    run = Run(small_disk, work_dir=tmp_path / "engine")
    run.submit(photo, batch_id="full")
    outcome = run.finish()["noise.jpg"]
    assert outcome.status is ImageStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == "insufficient_storage", outcome.error
    assert outcome.error.message == "no space left on device writing renditions"
    folder = run.storage.image_dir(sha256_of(photo))
    assert not folder.exists() or list(folder.iterdir()) == [], "a partial result was left"

    filler.unlink()
    again = Run(small_disk, work_dir=tmp_path / "engine")
    again.submit(photo, batch_id="room")
    assert again.finish()["noise.jpg"].status is ImageStatus.DONE


def test_recycled_workers_start_in_milliseconds(tmp_path: Path, out: Path) -> None:
    """With one task per worker every image runs in a fresh worker, started from the fork server."""
    photos = [make_photo(tmp_path / f"r{i}.jpg", (64, 48), seed=i) for i in range(12)]
    run = Run(out, workers=1, max_tasks_per_child=1, task_function=counting_task)
    started = time.monotonic()
    for path in photos:
        run.submit(path)
    assert {o.status for o in run.finish().values()} == {ImageStatus.DONE}
    elapsed = time.monotonic() - started
    pids = {p.with_suffix(".starts").read_text() for p in photos}
    assert len(pids) == len(photos), "a worker ran more than one task"
    start_s = run.engine._pool.last_start_s
    print(f"12 images, a fresh worker each: {elapsed:.2f} s; last start {start_s * 1000:.1f} ms")
    assert start_s < 0.5, f"starting a worker took {start_s:.3f} s"
    assert elapsed < 30


ENGINE_OWNER = """
import hashlib, sys, time
from pathlib import Path
from pixelmill.core.specs import Limits, OutputFormat, RenderSpec
from pixelmill.engine.base import ImageJob
from pixelmill.engine.local import LocalEngine
from pixelmill.storage import LocalStorage
from engine_faults import counting_task

if __name__ == "__main__":
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    spec = RenderSpec(formats=(OutputFormat.JPEG,), limits=Limits(timeout_s=600))
    engine = LocalEngine(spec, LocalStorage(out), workers=2, memory_budget_bytes=640 << 20,
                         max_tasks_per_child=50, on_outcome=print,
                         task_function=counting_task).start()
    for name in ("crash-always.jpg", "hang.jpg", "ok.jpg"):
        photo = folder / name
        sha = hashlib.sha256(photo.read_bytes()).hexdigest()
        engine.submit(ImageJob(name, str(photo), sha))
    time.sleep(600)
"""


def _semaphores_mapped_by(pids: list[int]) -> set[str]:
    names: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/sem." in line:
                    names.add(line.split("/dev/shm/")[1].split()[0])
    return names


def test_killing_workers_and_the_engine_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGKILL of workers, then of the engine's process: no process, no /dev/shm semaphore."""
    psutil = pytest.importorskip("psutil")
    for name, seed in (("crash-always.jpg", 1), ("hang.jpg", 2), ("ok.jpg", 3)):
        make_photo(tmp_path / name, seed=seed)
    script = tmp_path / "engine_owner.py"
    script.write_text(ENGINE_OWNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out"), str(tmp_path)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        # The crash image killed its worker twice and the hang holds a worker: wait for both.
        while time.monotonic() < deadline:
            if starts_of(tmp_path / "crash-always.jpg") >= 2 and starts_of(tmp_path / "hang.jpg"):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        tree = psutil.Process(proc.pid).children(recursive=True)
        mapped = _semaphores_mapped_by([proc.pid, *(p.pid for p in tree)])
        assert len(tree) >= 3, "expected a fork server and two workers"
    finally:
        proc.kill()
        proc.wait(10)
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left behind: {[p.pid for p in alive]}"
    assert mapped == set(), f"named semaphores in use: {mapped}"
