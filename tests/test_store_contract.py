"""The BatchStore contract, run against both stores: SQLite on a temp file, Redis on a prefix."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

import pixelmill.store.redis
import pixelmill.store.sqlite
from pixelmill.states import BatchStatus, ImageStatus
from pixelmill.store import (
    BatchRecord,
    BatchStore,
    NewImage,
    RedisBatchStore,
    SqliteBatchStore,
    Transition,
    open_store,
)

StoreFactory = Callable[[], BatchStore]
NOT_APPLIED = Transition(applied=False)
UPLOAD_ERROR = {"code": "unsupported_format", "message": "not an image"}


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Builds store objects over one backing (a file, or a Redis prefix): a new one = a restart."""
    opened: list[BatchStore] = []

    def make() -> BatchStore:
        store: BatchStore
        if request.param == "sqlite":
            store = SqliteBatchStore(tmp_path / "pixelmill.db")
        else:
            url = request.getfixturevalue("redis_server_url")
            store = RedisBatchStore(url, prefix=request.getfixturevalue("redis_prefix"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> BatchStore:
    return make_store()


@pytest.fixture
def redis_store(redis_server_url: str, redis_prefix: str) -> Iterator[RedisBatchStore]:
    store = RedisBatchStore(redis_server_url, prefix=redis_prefix, ttl_s=3600)
    yield store
    store.close()


def new_images(count: int, failed: int = 0) -> list[NewImage]:
    """``count`` uploaded images, the last ``failed`` of them already failed at upload."""
    images = []
    for seq in range(count):
        bad = seq >= count - failed
        images.append(
            NewImage(
                image_id=f"img-{seq:03d}",
                filename=f"photo-{seq}.jpg",
                sha256=None if bad else f"{seq:064x}",
                spool_path=None if bad else f"/spool/{seq}",
                declared_type="image/jpeg",
                detected_type=None if bad else "jpeg",
                error=UPLOAD_ERROR if bad else None,
            )
        )
    return images


def new_batch_id() -> str:
    return f"batch-{uuid.uuid4().hex}"


def checked(store: BatchStore, batch_id: str) -> BatchRecord:
    """The batch, after asserting the invariant and that counters match the image statuses."""
    batch = store.get_batch(batch_id)
    assert batch is not None
    assert batch.completed + batch.failed + batch.cancelled + batch.pending == batch.total
    statuses = Counter(image.status for image in batch.images)
    assert batch.total == len(batch.images)
    assert batch.completed == statuses[ImageStatus.DONE] + statuses[ImageStatus.DUPLICATE]
    assert batch.duplicates == statuses[ImageStatus.DUPLICATE]
    assert batch.failed == statuses[ImageStatus.FAILED]
    assert batch.cancelled == statuses[ImageStatus.CANCELLED]
    assert batch.pending == statuses[ImageStatus.PENDING] + statuses[ImageStatus.PROCESSING]
    return batch


def counts(batch: BatchRecord) -> tuple[int, int, int, int, int]:
    return (batch.completed, batch.duplicates, batch.failed, batch.cancelled, batch.pending)


def is_utc_iso(text: str | None) -> bool:
    return text is not None and datetime.fromisoformat(text).utcoffset() is not None


# -- creation and reading ---------------------------------------------------------------------


def test_create_returns_queued_batch_with_images_in_order(store: BatchStore) -> None:
    """A new batch is queued, counts every image pending and keeps upload order."""
    batch_id = new_batch_id()
    created = store.create_batch(batch_id, new_images(3), callback_url="http://127.0.0.1/hook")
    assert created == checked(store, batch_id)
    assert created.status is BatchStatus.QUEUED
    assert (created.total, *counts(created)) == (3, 0, 0, 0, 0, 3)
    assert created.callback_url == "http://127.0.0.1/hook"
    assert is_utc_iso(created.created_at)
    assert created.finished_at is None
    assert [(i.image_id, i.seq) for i in created.images] == [
        ("img-000", 0),
        ("img-001", 1),
        ("img-002", 2),
    ]
    first = created.images[0]
    assert (first.status, first.batch_id, first.filename) == (
        ImageStatus.PENDING,
        batch_id,
        "photo-0.jpg",
    )
    assert (first.sha256, first.spool_path, first.detected_type) == ("0" * 64, "/spool/0", "jpeg")
    assert (first.error, first.renditions, first.timings_ms) == (None, [], None)


def test_get_batch_without_images_and_get_image(store: BatchStore) -> None:
    """include_images=False leaves images out; get_image returns one image record."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    bare = store.get_batch(batch_id, include_images=False)
    assert bare is not None and bare.images == [] and bare.total == 2
    image = store.get_image(batch_id, "img-001")
    assert image is not None and (image.image_id, image.seq) == ("img-001", 1)


def test_unknown_ids_answer_none_or_not_applied(store: BatchStore) -> None:
    """Unknown batches and images: None from reads, nothing applied by transitions."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(1))
    assert store.get_batch("no-such-batch") is None
    assert store.get_image(batch_id, "no-such-image") is None
    assert store.get_image("no-such-batch", "img-000") is None
    assert store.cancel_batch("no-such-batch") == (None, NOT_APPLIED)
    assert store.mark_processing(batch_id, "no-such-image") == NOT_APPLIED
    assert store.finish_image("no-such-batch", "img-000", ImageStatus.DONE) == NOT_APPLIED
    assert store.wait_for_change("no-such-batch", 0, timeout_s=5) == 0
    assert checked(store, batch_id).pending == 1


def test_duplicate_batch_id_is_refused(store: BatchStore) -> None:
    """Creating a batch twice with one id raises and leaves the first untouched."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    with pytest.raises(ValueError, match="already exists"):
        store.create_batch(batch_id, new_images(5))
    assert checked(store, batch_id).total == 2


def test_images_failed_at_upload_count_as_failed(store: BatchStore) -> None:
    """Images created with an error start failed, keep the error and count in ``failed``."""
    batch_id = new_batch_id()
    created = store.create_batch(batch_id, new_images(4, failed=1))
    assert created.status is BatchStatus.QUEUED
    assert counts(checked(store, batch_id)) == (0, 0, 1, 0, 3)
    bad = store.get_image(batch_id, "img-003")
    assert bad is not None and bad.status is ImageStatus.FAILED and bad.error == UPLOAD_ERROR
    assert store.finish_image(batch_id, "img-003", ImageStatus.DONE) == NOT_APPLIED


@pytest.mark.parametrize(("count", "failed"), [(3, 3), (0, 0)])
def test_batch_with_nothing_to_do_is_completed_at_once(
    store: BatchStore, count: int, failed: int
) -> None:
    """All images failed at upload (or none at all): completed and finished on creation."""
    batch_id = new_batch_id()
    created = store.create_batch(batch_id, new_images(count, failed=failed))
    assert created.status is BatchStatus.COMPLETED and created.is_finished
    assert is_utc_iso(created.finished_at)
    assert counts(checked(store, batch_id)) == (0, 0, failed, 0, 0)
    assert store.unfinished_images() == []
    assert store.cancel_batch(batch_id)[1] == NOT_APPLIED


# -- transitions ------------------------------------------------------------------------------


def test_lifecycle_keeps_counts_and_invariant_at_every_step(store: BatchStore) -> None:
    """queued -> processing -> completed, with exact counts after each transition."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(5, failed=1))
    steps: list[tuple[str, ImageStatus | None, tuple[int, ...], BatchStatus]] = [
        ("img-000", None, (0, 0, 1, 0, 4), BatchStatus.PROCESSING),
        ("img-000", ImageStatus.DONE, (1, 0, 1, 0, 3), BatchStatus.PROCESSING),
        ("img-001", ImageStatus.DUPLICATE, (2, 1, 1, 0, 2), BatchStatus.PROCESSING),
        ("img-002", None, (2, 1, 1, 0, 2), BatchStatus.PROCESSING),
        ("img-002", ImageStatus.FAILED, (2, 1, 2, 0, 1), BatchStatus.PROCESSING),
        ("img-003", ImageStatus.DONE, (3, 1, 2, 0, 0), BatchStatus.COMPLETED),
    ]
    version = checked(store, batch_id).version
    for image_id, final, expected, batch_status in steps:
        if final is None:
            transition = store.mark_processing(batch_id, image_id)
        else:
            transition = store.finish_image(batch_id, image_id, final)
        batch = checked(store, batch_id)
        assert transition.applied
        assert transition.batch_finished == (batch_status is BatchStatus.COMPLETED)
        assert counts(batch) == expected
        assert batch.status is batch_status
        assert batch.version > version
        version = batch.version
    assert is_utc_iso(checked(store, batch_id).finished_at)


def test_a_batch_emptied_by_cancelled_images_ends_cancelled(store: BatchStore) -> None:
    """Issue 6 item 1: the engine's callbacks for swept images may land before the store's
    cancel; the batch they empty ends ``cancelled``, and so does its webhook, not
    ``completed``."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(3))
    store.finish_image(batch_id, "img-000", ImageStatus.DONE)
    store.finish_image(batch_id, "img-001", ImageStatus.CANCELLED)
    last = store.finish_image(batch_id, "img-002", ImageStatus.CANCELLED)
    assert last.batch_finished
    batch = checked(store, batch_id)
    assert batch.status is BatchStatus.CANCELLED and batch.is_finished
    _, late_cancel = store.cancel_batch(batch_id)
    assert late_cancel == NOT_APPLIED
    assert checked(store, batch_id).status is BatchStatus.CANCELLED


def test_first_finish_moves_a_queued_batch_to_processing(store: BatchStore) -> None:
    """Finishing an image that was never marked processing still starts the batch."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    assert store.finish_image(batch_id, "img-001", ImageStatus.DONE).applied
    assert checked(store, batch_id).status is BatchStatus.PROCESSING


def test_finish_records_result_fields(store: BatchStore) -> None:
    """sha256, error, renditions and timings given to finish_image round-trip."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    renditions = [{"name": "large", "format": "webp", "width": 1440, "height": 1920}]
    timings = {"decode": 40.5, "total": 312.25}
    store.finish_image(
        batch_id, "img-000", ImageStatus.DONE, sha256="f" * 64, renditions=renditions,
        timings_ms=timings,
    )  # fmt: skip
    error = {"code": "corrupt_image", "message": "bad CRC"}
    store.finish_image(batch_id, "img-001", ImageStatus.FAILED, error=error)
    done, failed = checked(store, batch_id).images
    assert (done.sha256, done.renditions, done.timings_ms, done.error) == (
        "f" * 64,
        renditions,
        timings,
        None,
    )
    assert (failed.error, failed.sha256) == (error, f"{1:064x}")


def test_finish_twice_is_applied_once(store: BatchStore) -> None:
    """A second finish (a task that ran twice) changes no status, field, counter or version."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    assert store.finish_image(batch_id, "img-000", ImageStatus.DUPLICATE).applied
    before = checked(store, batch_id)
    again = store.finish_image(
        batch_id, "img-000", ImageStatus.FAILED, error={"code": "internal", "message": "x"}
    )
    after = checked(store, batch_id)
    assert again == NOT_APPLIED
    assert after == before
    assert after.images[0].status is ImageStatus.DUPLICATE and after.images[0].error is None


def test_mark_processing_is_applied_once_and_never_after_final(store: BatchStore) -> None:
    """pending -> processing happens once; a final image does not go back to processing."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    assert store.mark_processing(batch_id, "img-000").applied
    version = checked(store, batch_id).version
    assert store.mark_processing(batch_id, "img-000") == NOT_APPLIED
    store.finish_image(batch_id, "img-000", ImageStatus.DONE)
    assert store.mark_processing(batch_id, "img-000") == NOT_APPLIED
    batch = checked(store, batch_id)
    assert batch.images[0].status is ImageStatus.DONE
    assert batch.version > version


def test_finish_image_refuses_a_non_final_status(store: BatchStore) -> None:
    """pending and processing are not results: finish_image raises and changes nothing."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(1))
    for status in (ImageStatus.PENDING, ImageStatus.PROCESSING):
        with pytest.raises(ValueError, match="final status"):
            store.finish_image(batch_id, "img-000", status)
    assert checked(store, batch_id).images[0].status is ImageStatus.PENDING


def test_concurrent_finishers_count_exactly_once(store: BatchStore) -> None:
    """8 threads racing to start and finish the same 50 images: every image counted once."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(50))
    finals = [ImageStatus.DONE, ImageStatus.DUPLICATE, ImageStatus.FAILED]
    applied: list[str] = []
    finished: list[Transition] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def race(offset: int) -> None:
        barrier.wait()
        for k in range(50):
            seq = (k + offset * 7) % 50
            image_id = f"img-{seq:03d}"
            store.mark_processing(batch_id, image_id)
            transition = store.finish_image(batch_id, image_id, finals[seq % 3])
            with lock:
                if transition.applied:
                    applied.append(image_id)
                if transition.batch_finished:
                    finished.append(transition)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch = checked(store, batch_id)
    assert sorted(applied) == [f"img-{seq:03d}" for seq in range(50)]
    assert len(finished) == 1
    assert counts(batch) == (34, 17, 16, 0, 0)
    assert batch.status is BatchStatus.COMPLETED


# -- cancellation -----------------------------------------------------------------------------


def test_cancel_cancels_pending_images_and_spares_processing_ones(store: BatchStore) -> None:
    """Cancel: batch cancelled, pending images cancelled, the processing one left to finish."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(4))
    store.finish_image(batch_id, "img-000", ImageStatus.DONE)
    store.mark_processing(batch_id, "img-001")
    record, transition = store.cancel_batch(batch_id)
    assert transition == Transition(applied=True, batch_finished=False)
    assert record == checked(store, batch_id)
    assert record is not None and record.status is BatchStatus.CANCELLED
    assert [i.status for i in record.images] == [
        ImageStatus.DONE,
        ImageStatus.PROCESSING,
        ImageStatus.CANCELLED,
        ImageStatus.CANCELLED,
    ]
    assert counts(record) == (1, 0, 0, 2, 1)
    assert record.finished_at is None and not record.is_finished
    assert store.mark_processing(batch_id, "img-002") == NOT_APPLIED
    assert store.finish_image(batch_id, "img-003", ImageStatus.DONE) == NOT_APPLIED


def test_cancel_with_every_unfinished_image_processing_cancels_none(store: BatchStore) -> None:
    """Nothing pending to drop: the batch is cancelled all the same (on Redis the script used
    to subtract "-0" from ``pending``: "value is not an integer or out of range")."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    store.mark_processing(batch_id, "img-000")
    store.finish_image(batch_id, "img-001", ImageStatus.DONE)
    record, transition = store.cancel_batch(batch_id)
    assert transition == Transition(applied=True, batch_finished=False)
    assert transition.cancelled_images == 0
    assert record is not None and record.status is BatchStatus.CANCELLED
    assert counts(checked(store, batch_id)) == (1, 0, 0, 0, 1)
    assert store.finish_image(batch_id, "img-000", ImageStatus.DONE).batch_finished
    assert checked(store, batch_id).status is BatchStatus.CANCELLED


def test_images_a_cancel_drops_carry_a_cancelled_error(store: BatchStore) -> None:
    """Like every other cancelled image, one cancelled before it started says why."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(3))
    store.mark_processing(batch_id, "img-000")
    _, transition = store.cancel_batch(batch_id)
    assert transition.cancelled_images == 2
    images = checked(store, batch_id).images
    assert images[0].error is None
    for image in images[1:]:
        assert image.error is not None and image.error["code"] == "cancelled"
        assert image.error["message"]


def test_last_processing_image_finishes_a_cancelled_batch_once(store: BatchStore) -> None:
    """After cancel, finishing the last processing image reports batch_finished exactly once."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(3))
    store.mark_processing(batch_id, "img-000")
    store.mark_processing(batch_id, "img-001")
    store.cancel_batch(batch_id)
    first = store.finish_image(batch_id, "img-000", ImageStatus.DONE)
    last = store.finish_image(batch_id, "img-001", ImageStatus.CANCELLED)
    repeat = store.finish_image(batch_id, "img-001", ImageStatus.CANCELLED)
    assert (first, last, repeat) == (
        Transition(applied=True, batch_finished=False),
        Transition(applied=True, batch_finished=True),
        NOT_APPLIED,
    )
    batch = checked(store, batch_id)
    assert batch.status is BatchStatus.CANCELLED and batch.is_finished
    assert counts(batch) == (1, 0, 0, 2, 0)
    assert is_utc_iso(batch.finished_at)
    assert store.cancel_batch(batch_id)[1] == NOT_APPLIED


def test_cancel_with_nothing_processing_finishes_at_once(store: BatchStore) -> None:
    """Cancelling a batch with no image in flight finishes it in that one call."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(3, failed=1))
    record, transition = store.cancel_batch(batch_id)
    assert transition == Transition(applied=True, batch_finished=True)
    assert record is not None and record.is_finished and is_utc_iso(record.finished_at)
    assert counts(checked(store, batch_id)) == (0, 0, 1, 2, 0)


def test_cancel_is_idempotent(store: BatchStore) -> None:
    """A second cancel is not applied and changes nothing, not even the version."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    store.mark_processing(batch_id, "img-000")
    first, _ = store.cancel_batch(batch_id)
    second, transition = store.cancel_batch(batch_id)
    assert transition == NOT_APPLIED
    assert second == first == checked(store, batch_id)


def test_cancel_after_completion_is_not_applied(store: BatchStore) -> None:
    """A completed batch stays completed when cancelled."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(1))
    store.finish_image(batch_id, "img-000", ImageStatus.DONE)
    record, transition = store.cancel_batch(batch_id)
    assert transition == NOT_APPLIED
    assert record is not None and record.status is BatchStatus.COMPLETED
    assert counts(checked(store, batch_id)) == (1, 0, 0, 0, 0)


# -- restart and resume -----------------------------------------------------------------------


def test_new_store_object_sees_state_and_unfinished_images(make_store: StoreFactory) -> None:
    """After a restart every batch reads the same; unfinished images come oldest batch first."""
    first = make_store()
    older, newer, done, cancelled = (new_batch_id() for _ in range(4))
    first.create_batch(older, new_images(4, failed=1))
    first.create_batch(done, new_images(1))
    first.create_batch(newer, new_images(2))
    first.create_batch(cancelled, new_images(2))
    first.mark_processing(older, "img-001")
    first.finish_image(older, "img-000", ImageStatus.DONE)
    first.finish_image(done, "img-000", ImageStatus.DONE)
    first.mark_processing(cancelled, "img-001")
    first.cancel_batch(cancelled)
    snapshot = [first.get_batch(batch_id) for batch_id in (older, newer, done, cancelled)]
    first.close()

    second = make_store()
    assert [second.get_batch(batch_id) for batch_id in (older, newer, done, cancelled)] == snapshot
    resume = [(i.batch_id, i.image_id, i.status) for i in second.unfinished_images()]
    assert resume == [
        (older, "img-001", ImageStatus.PROCESSING),
        (older, "img-002", ImageStatus.PENDING),
        (newer, "img-000", ImageStatus.PENDING),
        (newer, "img-001", ImageStatus.PENDING),
        (cancelled, "img-001", ImageStatus.PROCESSING),
    ]
    assert second.finish_image(older, "img-000", ImageStatus.DONE) == NOT_APPLIED
    assert second.finish_image(cancelled, "img-001", ImageStatus.CANCELLED).batch_finished
    assert [i.batch_id for i in second.unfinished_images()] == [older, older, newer, newer]


# -- change feed ------------------------------------------------------------------------------


TRANSITIONS: dict[str, Callable[[BatchStore, str], object]] = {
    "mark_processing": lambda store, batch_id: store.mark_processing(batch_id, "img-000"),
    "finish_image": lambda store, batch_id: store.finish_image(
        batch_id, "img-000", ImageStatus.DONE
    ),
    "cancel_batch": lambda store, batch_id: store.cancel_batch(batch_id),
}


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_wait_for_change_wakes_on_a_transition_from_another_thread(
    store: BatchStore, monkeypatch: pytest.MonkeyPatch, transition: str
) -> None:
    """A waiter is woken by the notification (not the polling fallback) of each transition."""
    monkeypatch.setattr(pixelmill.store.sqlite, "POLL_INTERVAL_S", 30.0)
    monkeypatch.setattr(pixelmill.store.redis, "POLL_INTERVAL_S", 30.0)
    batch_id = new_batch_id()
    version = store.create_batch(batch_id, new_images(2)).version
    timer = threading.Timer(0.2, TRANSITIONS[transition], args=(store, batch_id))
    started = time.monotonic()
    timer.start()
    try:
        woke_with = store.wait_for_change(batch_id, version, timeout_s=5)
    finally:
        timer.join()
    assert woke_with > version
    assert 0.15 < time.monotonic() - started < 2


def test_wait_for_change_sees_writes_of_another_store_object(make_store: StoreFactory) -> None:
    """A write through a second store object (as from another process) wakes the waiter."""
    waiter, writer = make_store(), make_store()
    batch_id = new_batch_id()
    version = waiter.create_batch(batch_id, new_images(2)).version
    timer = threading.Timer(0.1, writer.cancel_batch, args=(batch_id,))
    started = time.monotonic()
    timer.start()
    try:
        woke_with = waiter.wait_for_change(batch_id, version, timeout_s=5)
    finally:
        timer.join()
    assert woke_with > version
    assert time.monotonic() - started < 2


def test_wait_for_change_times_out_without_a_change(store: BatchStore) -> None:
    """With no transition the waiter returns the unchanged version after the timeout."""
    batch_id = new_batch_id()
    version = store.create_batch(batch_id, new_images(1)).version
    started = time.monotonic()
    assert store.wait_for_change(batch_id, version, timeout_s=0.3) == version
    assert 0.29 < time.monotonic() - started < 1.5


def test_wait_for_change_returns_at_once_when_already_newer(store: BatchStore) -> None:
    """A version newer than ``since_version`` is returned without waiting."""
    batch_id = new_batch_id()
    version = store.create_batch(batch_id, new_images(1)).version
    store.mark_processing(batch_id, "img-000")
    started = time.monotonic()
    assert store.wait_for_change(batch_id, version, timeout_s=5) > version
    assert time.monotonic() - started < 0.5


# -- backend specifics ------------------------------------------------------------------------


def test_open_store_picks_the_backend(tmp_path: Path, redis_server_url: str) -> None:
    """'sqlite' opens a file in the data dir, a redis:// URL opens Redis, anything else fails."""
    sqlite_store = open_store("sqlite", tmp_path)
    redis_store = open_store(redis_server_url, tmp_path, prefix="pixelmill-test:unused:")
    try:
        assert isinstance(sqlite_store, SqliteBatchStore)
        assert (tmp_path / "pixelmill.db").is_file()
        assert isinstance(redis_store, RedisBatchStore) and redis_store.ping()
    finally:
        sqlite_store.close()
        redis_store.close()
    with pytest.raises(ValueError, match="unknown store"):
        open_store("postgres://127.0.0.1/db", tmp_path)


def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The SQLite file uses write-ahead logging, seen from an independent connection."""
    SqliteBatchStore(tmp_path / "pixelmill.db").close()
    with sqlite3.connect(tmp_path / "pixelmill.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_redis_finished_batch_expires_and_leaves_unfinished_set(
    redis_store: RedisBatchStore, redis_server_url: str, redis_prefix: str
) -> None:
    """Every key of a finished batch gets a TTL; an unfinished batch's keys have none."""
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    finished, running = new_batch_id(), new_batch_id()
    redis_store.create_batch(finished, new_images(2))
    redis_store.create_batch(running, new_images(1))
    unfinished_key = f"{redis_prefix}unfinished"
    assert set(client.zrange(unfinished_key, 0, -1)) == {finished, running}
    redis_store.mark_processing(finished, "img-000")
    redis_store.cancel_batch(finished)
    assert client.ttl(f"{redis_prefix}batch:{finished}") == -1  # img-000 still processing
    redis_store.finish_image(finished, "img-000", ImageStatus.DONE)
    finished_keys = list(client.scan_iter(match=f"{redis_prefix}*{finished}*"))
    running_keys = list(client.scan_iter(match=f"{redis_prefix}*{running}*"))
    # batch, list, changes (finished batch only), image hashes
    assert len(finished_keys) == 5 and len(running_keys) == 3
    assert all(0 < client.ttl(key) <= 3600 for key in finished_keys)
    assert all(client.ttl(key) == -1 for key in running_keys)
    assert client.zrange(unfinished_key, 0, -1) == [running]
    client.close()


def test_redis_keys_live_only_under_the_prefix(
    redis_store: RedisBatchStore, redis_server_url: str, redis_prefix: str
) -> None:
    """Every key naming the batch, anywhere in the database, starts with the store's prefix."""
    batch_id = new_batch_id()
    redis_store.create_batch(batch_id, new_images(3, failed=1))
    redis_store.finish_image(batch_id, "img-000", ImageStatus.DONE, renditions=[{"n": 1}])
    redis_store.cancel_batch(batch_id)
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    keys = list(client.scan_iter(match=f"*{batch_id}*", count=1000))
    client.close()
    assert len(keys) == 6  # batch, list, changes, three images
    assert all(key.startswith(redis_prefix) for key in keys)


def test_redis_store_refuses_a_client_without_decoded_responses(redis_server_url: str) -> None:
    """A client returning bytes is refused up front rather than failing on the first read."""
    client = redis.Redis.from_url(redis_server_url)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisBatchStore(client)
    finally:
        client.close()


RACE_SCRIPT = """
import sys
from pixelmill.states import ImageStatus
from pixelmill.store import SqliteBatchStore
store = SqliteBatchStore(sys.argv[1])
applied = 0
for seq in range(50):
    store.mark_processing(sys.argv[2], f"img-{seq:03d}")
    applied += store.finish_image(sys.argv[2], f"img-{seq:03d}", ImageStatus.DONE).applied
print(applied)
"""


def test_sqlite_processes_sharing_a_file_finish_each_image_once(tmp_path: Path) -> None:
    """Two processes racing over one file apply each transition once between them."""
    path = tmp_path / "pixelmill.db"
    store = SqliteBatchStore(path)
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(50))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SCRIPT, str(path), batch_id], stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    applied = [int(racer.communicate(timeout=60)[0]) for racer in racers]
    batch = checked(store, batch_id)
    store.close()
    assert all(racer.returncode == 0 for racer in racers)
    assert sum(applied) == 50
    assert counts(batch) == (50, 0, 0, 0, 0) and batch.status is BatchStatus.COMPLETED


def test_sqlite_prunes_finished_batches_older_than_the_ttl(tmp_path: Path) -> None:
    """Finished batches past the TTL are deleted at open; unfinished and recent ones stay."""
    path = tmp_path / "pixelmill.db"
    store = SqliteBatchStore(path, ttl_s=3600)
    old, recent, running = new_batch_id(), new_batch_id(), new_batch_id()
    for batch_id in (old, recent, running):
        store.create_batch(batch_id, new_images(2))
    for batch_id in (old, recent):
        for image in ("img-000", "img-001"):
            store.finish_image(batch_id, image, ImageStatus.DONE)
    store.close()
    with sqlite3.connect(path) as conn:  # age one finished batch by two hours
        conn.execute(
            "UPDATE batches SET finished_at = '2000-01-01T00:00:00.000Z' WHERE batch_id = ?",
            (old,),
        )
    reopened = SqliteBatchStore(path, ttl_s=3600)
    try:
        assert reopened.get_batch(old) is None
        assert reopened.get_batch(recent) is not None
        assert reopened.get_batch(running) is not None
        assert reopened.get_image(old, "img-000") is None
    finally:
        reopened.close()
    kept = SqliteBatchStore(path)  # no TTL: nothing is ever deleted
    try:
        assert kept.prune_expired() == 0 and kept.get_batch(recent) is not None
    finally:
        kept.close()


# -- change feed (event streams resume from an image's version) -----------------------------


def test_batch_changes_reads_only_images_finished_since_a_version(store: BatchStore) -> None:
    """Each finished image has a version of its own, below the batch's; a read from a
    version returns only what finished after it, in finishing order."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(5, failed=1))
    record, changed = store.batch_changes(batch_id, 0)
    assert record is not None and record.images == []
    assert [i.image_id for i in changed] == ["img-004"]
    assert record.version > changed[-1].version > 0
    seen = record.version
    store.mark_processing(batch_id, "img-002")
    store.finish_image(batch_id, "img-002", ImageStatus.DONE)
    record, changed = store.batch_changes(batch_id, seen)
    assert [i.image_id for i in changed] == ["img-002"]
    assert record is not None and record.version > changed[0].version > seen
    seen = record.version
    store.cancel_batch(batch_id)
    record, changed = store.batch_changes(batch_id, seen)
    assert [i.image_id for i in changed] == ["img-000", "img-001", "img-003"]
    assert record is not None and record.status is BatchStatus.CANCELLED
    _, everything = store.batch_changes(batch_id, 0)
    versions = [i.version for i in everything]
    assert len(everything) == 5 and versions == sorted(set(versions))
    assert record.version > versions[-1]
    assert store.batch_changes(new_batch_id(), 0) == (None, [])


def test_redis_waiters_share_one_listener_instead_of_a_subscription_each(
    redis_store: RedisBatchStore, redis_server_url: str, redis_prefix: str
) -> None:
    """Many waiting streams: no per-batch channel subscription, one pattern listener, and
    every waiter still woken by its own batch's change."""
    batch_ids = [new_batch_id() for _ in range(6)]
    versions = {b: redis_store.create_batch(b, new_images(1)).version for b in batch_ids}
    woke: dict[str, int] = {}

    def wait(batch_id: str) -> None:
        woke[batch_id] = redis_store.wait_for_change(batch_id, versions[batch_id], timeout_s=10)

    threads = [threading.Thread(target=wait, args=(b,)) for b in batch_ids]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every waiter is waiting now
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    try:
        channels = [f"{redis_prefix}events:{b}" for b in batch_ids]
        assert [count for _, count in client.pubsub_numsub(*channels)] == [0] * len(channels)
        patterns = [
            line
            for line in client.client_list()
            if int(line.get("psub", 0)) > 0 and line.get("name", "") == ""
        ]
        assert patterns, "a pattern subscription carries the changes"
    finally:
        client.close()
    for batch_id in batch_ids:
        redis_store.mark_processing(batch_id, "img-000")
    for thread in threads:
        thread.join(10)
    assert all(woke[b] > versions[b] for b in batch_ids)


# -- the distributed engine's coordination (Redis only: the store every machine shares) ------


def test_a_content_claim_is_exclusive_reentrant_and_released_by_its_owner_only(
    redis_store: RedisBatchStore,
) -> None:
    sha = "ab" * 32
    assert redis_store.claim_content(sha, "img-1", 30)
    assert not redis_store.claim_content(sha, "img-2", 30)
    assert redis_store.claim_content(sha, "img-1", 30), "a redelivery takes its own claim again"
    assert not redis_store.release_claim(sha, "img-2")
    assert not redis_store.refresh_claim(sha, "img-2", 30)
    assert redis_store.refresh_claim(sha, "img-1", 30)
    assert redis_store.release_claim(sha, "img-1")
    assert redis_store.claim_content(sha, "img-2", 0.2)
    time.sleep(0.3)  # the holder died: its claim expires
    assert redis_store.claim_content(sha, "img-3", 30)


def test_runs_are_counted_across_deliveries_of_known_images_only(
    redis_store: RedisBatchStore,
) -> None:
    batch_id = new_batch_id()
    redis_store.create_batch(batch_id, new_images(1))
    assert [redis_store.start_attempt(batch_id, "img-000") for _ in range(3)] == [1, 2, 3]
    assert redis_store.start_attempt(batch_id, "no-such-image") == 0
    assert redis_store.get_image(batch_id, "no-such-image") is None, "not revived"
    assert not redis_store.is_batch_cancelled(batch_id)
    redis_store.cancel_batch(batch_id)
    assert redis_store.is_batch_cancelled(batch_id)


def test_an_original_is_held_until_its_last_image_lets_go(redis_store: RedisBatchStore) -> None:
    sha = "cd" * 32
    redis_store.hold_original(sha, "img-1")
    redis_store.hold_original(sha, "img-2")
    assert redis_store.release_original(sha, "img-1") == 1
    assert redis_store.release_original(sha, "img-1") == 1, "idempotent"
    assert redis_store.release_original(sha, "img-2") == 0


def test_final_images_are_counted_once_per_status(redis_store: RedisBatchStore) -> None:
    batch_id = new_batch_id()
    redis_store.create_batch(batch_id, new_images(4, failed=1))
    redis_store.finish_image(batch_id, "img-000", ImageStatus.DONE, sha256="0" * 64)
    redis_store.finish_image(batch_id, "img-000", ImageStatus.DONE, sha256="0" * 64)
    redis_store.finish_image(batch_id, "img-001", ImageStatus.DUPLICATE, sha256="1" * 64)
    redis_store.cancel_batch(batch_id)
    redis_store.cancel_batch(batch_id)
    assert redis_store.image_stats() == {"failed": 1, "done": 1, "duplicate": 1, "cancelled": 1}


@pytest.mark.parametrize("ending", ["finish", "cancel", "all_failed_at_upload"])
def test_a_finished_batch_with_a_callback_url_owes_its_callback_until_settled(
    redis_store: RedisBatchStore, ending: str
) -> None:
    batch_id, quiet_id = new_batch_id(), new_batch_id()
    url = "http://127.0.0.1:9/hook"
    images = new_images(1, failed=1 if ending == "all_failed_at_upload" else 0)
    redis_store.create_batch(batch_id, images, url)
    redis_store.create_batch(quiet_id, new_images(1))  # no callback_url: owes nothing
    if ending == "finish":
        assert redis_store.owed_callbacks() == []
        redis_store.finish_image(batch_id, "img-000", ImageStatus.DONE, sha256="0" * 64)
    elif ending == "cancel":
        redis_store.cancel_batch(batch_id)
    redis_store.finish_image(quiet_id, "img-000", ImageStatus.DONE, sha256="0" * 64)
    assert redis_store.owed_callbacks() == [batch_id]
    assert redis_store.lease_callback(batch_id, "service-a", 30)
    assert not redis_store.lease_callback(batch_id, "service-b", 30), "one sender at a time"
    redis_store.settle_callback(batch_id)
    assert redis_store.owed_callbacks() == []
    assert redis_store.lease_callback(batch_id, "service-b", 30), "the lease went with it"


# -- listing and deleting -------------------------------------------------------------------


def page_through(store: BatchStore, limit: int) -> list[list[str]]:
    """Every page of the listing, as batch ids."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        batches, cursor = store.list_batches(limit, cursor)
        assert all(batch.images == [] for batch in batches)
        pages.append([batch.batch_id for batch in batches])
        if cursor is None:
            return pages
        assert len(pages) < 50, "the listing never ends"


def test_list_batches_pages_newest_first_with_a_cursor(store: BatchStore) -> None:
    created = []
    for _ in range(7):
        created.append(new_batch_id())
        store.create_batch(created[-1], new_images(1))
        time.sleep(0.002)  # distinct creation times, as batches of real requests have
    assert page_through(store, 3) == [created[6:3:-1], created[3:0:-1], created[:1]]
    assert page_through(store, 7) == [created[::-1]]
    assert page_through(store, 200) == [created[::-1]]


def test_a_batch_created_while_paging_shifts_no_later_page(store: BatchStore) -> None:
    created = [new_batch_id() for _ in range(5)]
    for batch_id in created:
        store.create_batch(batch_id, new_images(1))
        time.sleep(0.002)
    first, cursor = store.list_batches(2)
    assert [b.batch_id for b in first] == created[:2:-1]
    store.create_batch(new_batch_id(), new_images(1))
    second, cursor = store.list_batches(2, cursor)
    assert [b.batch_id for b in second] == created[2:0:-1]
    third, cursor = store.list_batches(2, cursor)
    assert ([b.batch_id for b in third], cursor) == (created[:1], None)


def test_list_batches_reports_counters_and_status(store: BatchStore) -> None:
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(3, failed=1))
    store.finish_image(batch_id, "img-000", ImageStatus.DONE, sha256="0" * 64)
    [listed], _ = store.list_batches(1)
    assert listed == store.get_batch(batch_id, include_images=False)
    assert (listed.completed, listed.failed, listed.pending) == (1, 1, 1)


@pytest.mark.parametrize(
    "cursor",
    [
        "junk!",
        "",
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00Z_b",
        "2026-01-01T00:00:00.000Z_",
        # Digits of other scripts (Arabic-Indic, fullwidth): ASCII digits only.
        "\u0662\u0660\u0662\u0666-01-01T00:00:00.000Z_b",
        "\uff12\uff10\uff12\uff16-01-01T00:00:00.000Z_b",
        "2026-01-01T00:00:00.000Z_b\n",
    ],
)
def test_a_cursor_the_store_did_not_hand_out_is_refused(store: BatchStore, cursor: str) -> None:
    from pixelmill.store.base import InvalidCursor

    with pytest.raises(InvalidCursor):
        store.list_batches(5, cursor)


def test_delete_batch_forgets_it_and_its_images(store: BatchStore) -> None:
    kept, doomed = new_batch_id(), new_batch_id()
    store.create_batch(kept, new_images(2))
    store.create_batch(doomed, new_images(3, failed=1))
    store.finish_image(doomed, "img-000", ImageStatus.DONE, sha256="0" * 64)
    assert store.delete_batch(doomed)
    assert store.get_batch(doomed) is None
    assert store.get_image(doomed, "img-001") is None
    assert store.batch_changes(doomed, 0) == (None, [])
    assert store.wait_for_change(doomed, 0, timeout_s=5) == 0
    assert [i.batch_id for i in store.unfinished_images()] == [kept, kept]
    assert [b.batch_id for b in store.list_batches(10)[0]] == [kept]
    assert not store.delete_batch(doomed), "a second delete finds nothing"
    assert not store.delete_batch(new_batch_id())
    assert store.finish_image(doomed, "img-001", ImageStatus.DONE) == NOT_APPLIED
    assert checked(store, kept).pending == 2


def test_a_deleted_batch_leaves_no_redis_key(
    redis_store: RedisBatchStore, redis_server_url: str, redis_prefix: str
) -> None:
    batch_id = new_batch_id()
    redis_store.create_batch(batch_id, new_images(2), "http://127.0.0.1:9/hook")
    redis_store.finish_image(batch_id, "img-000", ImageStatus.DONE, sha256="0" * 64)
    redis_store.cancel_batch(batch_id)
    assert redis_store.owed_callbacks() == [batch_id], "owed until deleted"
    assert redis_store.delete_batch(batch_id)
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    try:
        assert [k for k in client.scan_iter(match=f"{redis_prefix}*{batch_id}*")] == []
        for index in ("unfinished", "callbacks_owed", "batches"):
            members = client.zrange(f"{redis_prefix}{index}", 0, -1)
            assert not [m for m in members if batch_id in m], index
    finally:
        client.close()
    assert redis_store.owed_callbacks() == []


def test_the_listing_drops_batches_that_expired(
    redis_store: RedisBatchStore, redis_server_url: str, redis_prefix: str
) -> None:
    created = [new_batch_id() for _ in range(4)]
    for batch_id in created:
        redis_store.create_batch(batch_id, new_images(1))
        time.sleep(0.002)
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    try:
        # What the batch TTL does to a finished batch: its hash goes, its index entry stays.
        client.delete(f"{redis_prefix}batch:{created[2]}", f"{redis_prefix}batch:{created[1]}")
        assert [b.batch_id for b in redis_store.list_batches(2)[0]] == [created[3], created[0]]
        assert client.zcard(f"{redis_prefix}batches") == 2, "expired ids left the index"
    finally:
        client.close()
    assert page_through(redis_store, 1) == [[created[3]], [created[0]]]


# -- a request's choice of renditions, and the placeholder ------------------------------------


def test_a_batch_keeps_its_choice_of_presets_and_formats_across_a_restart(
    make_store: StoreFactory,
) -> None:
    """The choice given at creation is read back, by a new store object too; none is None."""
    store = make_store()
    chosen, whole = new_batch_id(), new_batch_id()
    created = store.create_batch(
        chosen, new_images(2), presets=("thumbnail", "large"), formats=("webp",)
    )
    assert (created.presets, created.formats) == (("thumbnail", "large"), ("webp",))
    store.create_batch(whole, new_images(1))
    again = make_store()
    for batch_id, expected in [
        (chosen, (("thumbnail", "large"), ("webp",))),
        (whole, (None, None)),
    ]:
        batch = again.get_batch(batch_id, include_images=False)
        assert batch is not None
        assert (batch.presets, batch.formats) == expected
        assert "presets" not in batch.as_api_dict()  # the status body is unchanged


def test_only_presets_or_only_formats_is_kept_as_given(store: BatchStore) -> None:
    """A choice of formats alone keeps presets None (the whole catalogue), and the reverse."""
    formats_only, presets_only = new_batch_id(), new_batch_id()
    store.create_batch(formats_only, new_images(1), formats=("avif", "png"))
    store.create_batch(presets_only, new_images(1), presets=("medium",))
    first = store.get_batch(formats_only)
    second = store.get_batch(presets_only)
    assert first is not None and (first.presets, first.formats) == (None, ("avif", "png"))
    assert second is not None and (second.presets, second.formats) == (("medium",), None)


def test_finish_records_the_placeholder_once(store: BatchStore) -> None:
    """The placeholder given with the final status is in the record and its API dict; a
    second finish changes nothing; an image finished without one has None."""
    batch_id = new_batch_id()
    store.create_batch(batch_id, new_images(2))
    store.finish_image(batch_id, "img-000", ImageStatus.DONE, placeholder="1QcSHQRnh493V4dI")
    store.finish_image(batch_id, "img-000", ImageStatus.DUPLICATE, placeholder="other")
    store.finish_image(batch_id, "img-001", ImageStatus.FAILED, error=UPLOAD_ERROR)
    with_one = store.get_image(batch_id, "img-000")
    without = store.get_image(batch_id, "img-001")
    assert with_one is not None and with_one.placeholder == "1QcSHQRnh493V4dI"
    assert with_one.as_api_dict()["placeholder"] == "1QcSHQRnh493V4dI"
    assert without is not None and without.placeholder is None
    assert without.as_api_dict()["placeholder"] is None
    _, changed = store.batch_changes(batch_id, 0)
    assert [image.placeholder for image in changed] == ["1QcSHQRnh493V4dI", None]


def test_sqlite_file_of_an_older_release_gains_the_new_columns(tmp_path: Path) -> None:
    """A database without the placeholder and choice columns opens, reads its rows with
    None for them, and takes new values."""
    path = tmp_path / "pixelmill.db"
    old = SqliteBatchStore(path)
    old.create_batch("old-batch", new_images(1))
    old.close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE images DROP COLUMN placeholder")
        conn.execute("ALTER TABLE batches DROP COLUMN presets")
        conn.execute("ALTER TABLE batches DROP COLUMN formats")
    store = SqliteBatchStore(path)
    try:
        batch = store.get_batch("old-batch")
        assert batch is not None and (batch.presets, batch.formats) == (None, None)
        assert batch.images[0].placeholder is None
        store.finish_image("old-batch", "img-000", ImageStatus.DONE, placeholder="abc")
        store.create_batch("new-batch", new_images(1), presets=("large",))
        image = store.get_image("old-batch", "img-000")
        assert image is not None and image.placeholder == "abc"
        new = store.get_batch("new-batch")
        assert new is not None and new.presets == ("large",)
    finally:
        store.close()


# -- expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_expired_batch_is_neither_listed_nor_found_while_the_store_is_idle(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """Past the TTL a finished batch is gone to every read, with no prune in between."""
    store: BatchStore
    if kind == "sqlite":
        store = SqliteBatchStore(tmp_path / "pixelmill.db", ttl_s=1)
    else:
        url = request.getfixturevalue("redis_server_url")
        store = RedisBatchStore(url, prefix=request.getfixturevalue("redis_prefix"), ttl_s=1)
    try:
        expired, running = new_batch_id(), new_batch_id()
        store.create_batch(expired, new_images(1))
        store.finish_image(expired, "img-000", ImageStatus.FAILED, error=UPLOAD_ERROR)
        store.create_batch(running, new_images(1))
        time.sleep(2.2)
        assert [b.batch_id for b in store.list_batches(10)[0]] == [running]
        assert store.get_batch(expired) is None
        assert store.get_image(expired, "img-000") is None
        assert store.batch_changes(expired, 0) == (None, [])
        assert store.wait_for_change(expired, 0, 0.1) == 0
        assert store.get_batch(running) is not None
    finally:
        store.close()


def test_redis_the_change_feed_of_a_batch_finished_by_its_only_image_expires(
    redis_store: RedisBatchStore, redis_server_url: str, redis_prefix: str
) -> None:
    batch_id = new_batch_id()
    redis_store.create_batch(batch_id, new_images(1))
    redis_store.finish_image(batch_id, "img-000", ImageStatus.DONE)
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{redis_prefix}*{batch_id}*"))
        assert f"{redis_prefix}batch:{batch_id}:changes" in keys
        assert {key: client.ttl(key) for key in keys if client.ttl(key) <= 0} == {}
    finally:
        client.close()


def test_redis_the_listing_index_does_not_grow_with_expired_batches(
    redis_server_url: str, redis_prefix: str
) -> None:
    """New batches trim the index of expired ones, with no listing to meet them."""
    store = RedisBatchStore(redis_server_url, prefix=redis_prefix, ttl_s=1)
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    try:
        expired = [new_batch_id() for _ in range(20)]
        for batch_id in expired:
            store.create_batch(batch_id, new_images(1, failed=1))  # finished at once
        time.sleep(1.5)
        for _ in range(20):
            store.create_batch(new_batch_id(), new_images(1, failed=1))
        members = client.zrange(f"{redis_prefix}batches", 0, -1)
        assert [m for m in members if m.partition(" ")[2] in expired] == []
        assert len(members) <= 20
    finally:
        client.close()
        store.close()
