"""One image on an idle engine gets every worker's core; under load each image gets one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine_faults import threads_recording_task
from pixelmill.engine import admission
from pixelmill.engine.admission import decode_cost, spread_cost
from pixelmill.states import ImageStatus
from test_engine import SMALL_SPEC, Run, make_photo

CPUS = len(os.sched_getaffinity(0))


def _threads(path: Path) -> int:
    return int(path.with_suffix(".threads").read_text())


def _two_workers_with_budget(tmp_path: Path, budget: int) -> Run:
    return Run(
        tmp_path / "out",
        workers=2,
        memory_budget_bytes=budget,
        task_function=threads_recording_task,
    )


def _wait_until_started(path: Path) -> None:
    """Until the task of ``path`` has started (it leaves its thread count first)."""
    deadline = time.monotonic() + 10
    while not path.with_suffix(".threads").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_an_image_alone_on_an_idle_engine_gets_every_core(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "alone.jpg", (1600, 1200))
    run = Run(tmp_path / "out", workers=2, task_function=threads_recording_task)
    run.submit(photo)
    assert run.finish()["alone.jpg"].status is ImageStatus.DONE
    assert _threads(photo) == min(2, CPUS)


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
    assert _threads(later) == min(2, CPUS)


def test_cores_lent_to_a_running_image_are_not_lent_again(tmp_path: Path) -> None:
    """Four workers, images arriving one by one while the first still renders: the first
    gets the idle cores, the next ones one each (the idle workers' cores are taken)."""
    photos = [make_photo(tmp_path / f"slow{i}.jpg", (1600, 1200), seed=i) for i in range(3)]
    run = Run(tmp_path / "out", workers=4, task_function=threads_recording_task)
    for path in photos:
        run.submit(path)
        _wait_until_started(path)
    assert {o.status for o in run.finish().values()} == {ImageStatus.DONE}
    assert [_threads(p) for p in photos] == [min(4, CPUS), 1, 1]


def test_an_image_whose_spread_would_pass_the_memory_budget_gets_one_core(
    tmp_path: Path,
) -> None:
    photo = make_photo(tmp_path / "alone.jpg", (1600, 1200))
    cost = decode_cost(str(photo), SMALL_SPEC)
    budget = spread_cost(cost, 2) - 1
    run = _two_workers_with_budget(tmp_path, budget)
    run.submit(photo)
    assert run.finish()["alone.jpg"].status is ImageStatus.DONE
    assert _threads(photo) == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({}, 4),  # idle: every worker's core
        ({"lent": 3}, 1),  # three cores lent to a running image: none left to lend
        ({"lent": 2}, 2),
        ({"queued": 1}, 1),  # an image waits: it gets the core
        ({"cpus": 2}, 2),  # no more threads than CPUs to run them
        ({"in_use": 500, "cost": 100}, 1),  # 500 + 150 > 600: not spread
        ({"in_use": 440, "cost": 100}, 2),  # 440 + 150 <= 600, but 440 + 175 > 600
        ({"in_use": 400, "cost": 100}, 4),  # 400 + 200 <= 600: four threads
        ({"in_use": 420, "cost": 100}, 3),  # 420 + 175 <= 600 < 420 + 200
    ],
)
def test_cores_for_lends_only_free_cores_within_the_budget(
    monkeypatch: pytest.MonkeyPatch, case: dict[str, int], expected: int
) -> None:
    monkeypatch.setattr(admission, "_usable_cpus", lambda: case.get("cpus", 8))
    chosen = admission.cores_for(
        workers=4,
        lent=case.get("lent", 0),
        queued=case.get("queued", 0),
        in_use=case.get("in_use", 0),
        cost=case.get("cost", 100),
        budget=600,
    )
    assert chosen == expected


def test_a_spread_image_does_not_hold_back_the_next_one(tmp_path: Path) -> None:
    """Spreading is not charged against the budget afterwards: a second image that fits
    beside the first one's estimate starts at once on the other worker, as before."""
    first, second = (make_photo(tmp_path / f"slow{i}.jpg", (1600, 1200), seed=i) for i in (1, 2))
    cost = decode_cost(str(first), SMALL_SPEC)
    # Room for the first one spread (1.5 x its cost), and for two side by side (2 x), but
    # not for the second beside the first charged as spread (2.5 x).
    budget = spread_cost(cost, 2) + cost - cost // 4
    run = _two_workers_with_budget(tmp_path, budget)
    run.submit(first)
    _wait_until_started(first)
    run.submit(second)
    _wait_until_started(second)
    started_second = second.with_suffix(".threads").stat().st_mtime
    results = run.finish()
    assert {o.status for o in results.values()} == {ImageStatus.DONE}
    # The first sleeps half a second before rendering: the second started well before.
    assert started_second - first.with_suffix(".threads").stat().st_mtime < 0.4
