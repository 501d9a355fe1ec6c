"""One image on an idle engine gets every worker's core; under load each image gets one."""

from __future__ import annotations

from pathlib import Path

from engine_faults import threads_recording_task
from pixelmill.states import ImageStatus
from test_engine import Run, make_photo


def _threads(path: Path) -> int:
    return int(path.with_suffix(".threads").read_text())


def test_an_image_alone_on_an_idle_engine_gets_every_core(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "alone.jpg", (1600, 1200))
    run = Run(tmp_path / "out", workers=2, task_function=threads_recording_task)
    run.submit(photo)
    assert run.finish()["alone.jpg"].status is ImageStatus.DONE
    assert _threads(photo) == 2


def test_one_worker_means_one_core(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "alone.jpg", (1600, 1200))
    run = Run(tmp_path / "out", workers=1, task_function=threads_recording_task)
    run.submit(photo)
    assert run.finish()["alone.jpg"].status is ImageStatus.DONE
    assert _threads(photo) == 1


def test_under_load_every_image_gets_one_core(tmp_path: Path) -> None:
    """Six queued images: while others wait or run, no image takes a second core, so
    throughput is as before; an image sent once the engine is idle again gets both."""
    photos = [make_photo(tmp_path / f"slow{i}.jpg", seed=i) for i in range(6)]
    run = Run(tmp_path / "out", workers=2, task_function=threads_recording_task)
    with run.engine.admission_lock():  # nothing starts until all six are queued
        for path in photos:
            run.submit(path)
    assert run.engine.join(timeout=60)
    assert [_threads(p) for p in photos] == [1] * 6
    later = make_photo(tmp_path / "later.jpg", (1600, 1200), seed=40)
    run.submit(later)
    results = run.finish()
    assert {o.status for o in results.values()} == {ImageStatus.DONE}
    assert _threads(later) == 2
