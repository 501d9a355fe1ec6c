"""The embedded batch store: one SQLite file in WAL mode.

Threads: one connection guarded by a lock. SQLite admits one writer at a time anyway and
every operation here is a short statement or two, so a lock costs little; it spares us
per-thread connections whose lifetimes follow the API's thread pool, which ``close()``
could not reach. Other processes on the same file are serialised by SQLite itself
(``BEGIN IMMEDIATE`` + ``busy_timeout``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pixelmill.states import BatchStatus, ImageStatus
from pixelmill.store._common import (
    COUNTERS_BY_FINAL_STATUS,
    dump_choice,
    dump_json,
    require_final,
    unavailable_on,
    utc_now,
)
from pixelmill.store.base import (
    CANCELLED_ERROR,
    BatchRecord,
    ImageRecord,
    NewImage,
    Transition,
)
from pixelmill.store.sqlite_listing import (
    LIVE_BATCH,
    delete_batch_rows,
    delete_expired_rows,
    expiry_cutoff,
    list_batch_page,
)
from pixelmill.store.sqlite_schema import (
    BATCH_COLUMNS,
    IMAGE_COLUMNS,
    batch_record,
    create_or_upgrade,
    image_record,
)

BUSY_TIMEOUT_MS = 10_000
PRUNE_INTERVAL_S = 60.0
# How often a waiter re-reads the version, to see writes made by another process.
POLL_INTERVAL_S = 0.25


@unavailable_on(sqlite3.OperationalError)
class SqliteBatchStore:
    """Batches and images in one SQLite file; survives restarts."""

    def __init__(self, path: Path | str, ttl_s: int | None = None) -> None:
        """``ttl_s``: finished batches older than this are gone at once to every read, and
        deleted at open, then at most once a minute as batches finish; None keeps them."""
        self.path = Path(path)
        self.ttl_s = ttl_s
        self._pruned_at = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE.
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._lock = threading.RLock()
        # Notified after every transition this process applies; waiters also poll the file.
        self._changed = threading.Condition()
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL
            self._conn.execute("PRAGMA foreign_keys = ON")
            create_or_upgrade(self._conn)
        self.prune_expired()

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def prune_expired(self) -> int:
        """Delete finished batches (and their images) older than ``ttl_s``; return how many."""
        if self.ttl_s is None:
            return 0
        self._pruned_at = time.monotonic()
        with self._write() as conn:
            return delete_expired_rows(conn, expiry_cutoff(self.ttl_s))

    def _prune_now_and_then(self) -> None:
        if self.ttl_s is not None and time.monotonic() - self._pruned_at > PRUNE_INTERVAL_S:
            self.prune_expired()

    def _finish_batch_if_drained(self, conn: sqlite3.Connection, batch_id: str) -> bool:
        """Inside a transaction: when nothing is pending, set the final status and time.

        Only a cancel cancels images, so a batch with a cancelled image ends ``cancelled``
        even when the engine's callbacks for its swept images land before the store's cancel.
        """
        cursor = conn.execute(
            "UPDATE batches SET finished_at = ?,"
            " status = CASE WHEN status = 'cancelled' OR cancelled > 0"
            " THEN 'cancelled' ELSE 'completed' END"
            " WHERE batch_id = ? AND pending = 0 AND finished_at IS NULL",
            (utc_now(), batch_id),
        )
        return cursor.rowcount == 1

    # -- the BatchStore protocol ----------------------------------------------------------

    def ping(self) -> bool:
        """True when the database file answers a query."""
        try:
            with self._lock:
                self._conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def create_batch(
        self,
        batch_id: str,
        images: list[NewImage],
        callback_url: str | None = None,
        *,
        presets: tuple[str, ...] | None = None,
        formats: tuple[str, ...] | None = None,
    ) -> BatchRecord:
        """A new batch; images with ``error`` set start (and count) as failed."""
        failed = sum(1 for image in images if image.error is not None)
        pending = len(images) - failed
        now = utc_now()
        status = BatchStatus.QUEUED if pending else BatchStatus.COMPLETED
        # Images failed at upload are final from the start: versions 1..failed, then the batch.
        failed_rank = {
            image.image_id: rank
            for rank, image in enumerate((i for i in images if i.error is not None), start=1)
        }
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO batches (batch_id, status, total, failed, pending, created_at,"
                    " finished_at, callback_url, version, presets, formats)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (batch_id, status, len(images), failed, pending, now,
                     None if pending else now, callback_url, failed + 1,
                     dump_choice(presets), dump_choice(formats)),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise ValueError(f"batch {batch_id!r} already exists") from None
            conn.executemany(
                f"INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (image.image_id, batch_id, image.filename,
                     ImageStatus.FAILED if image.error is not None else ImageStatus.PENDING,
                     image.sha256, image.spool_path, image.declared_type, image.detected_type,
                     dump_json(image.error), "[]", None, seq, failed_rank.get(image.image_id, 0),
                     None)
                    for seq, image in enumerate(images)
                ],
            )  # fmt: skip
        record = self.get_batch(batch_id)
        assert record is not None
        return record

    def _live_batch_row(self, batch_id: str) -> Any:
        """The batch's row, None when unknown or expired."""
        return self._conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = ? AND {LIVE_BATCH}",
            (batch_id, expiry_cutoff(self.ttl_s)),
        ).fetchone()

    def get_batch(self, batch_id: str, include_images: bool = True) -> BatchRecord | None:
        """The batch with its images in upload order, or None (unknown or expired)."""
        with self._lock:
            # One read transaction, so counters and image rows are the same snapshot.
            self._conn.execute("BEGIN")
            try:
                row = self._live_batch_row(batch_id)
                rows = []
                if row is not None and include_images:
                    rows = self._conn.execute(
                        f"SELECT {IMAGE_COLUMNS} FROM images WHERE batch_id = ? ORDER BY seq",
                        (batch_id,),
                    ).fetchall()
            finally:
                self._conn.execute("COMMIT")
        if row is None:
            return None
        return batch_record(row, [image_record(r) for r in rows])

    def get_image(self, batch_id: str, image_id: str) -> ImageRecord | None:
        """One image of a batch, or None (unknown, or its batch expired)."""
        live = f"SELECT batch_id FROM batches WHERE batch_id = ? AND {LIVE_BATCH}"
        with self._lock:
            row = self._conn.execute(
                f"SELECT {IMAGE_COLUMNS} FROM images WHERE batch_id IN ({live}) AND image_id = ?",
                (batch_id, expiry_cutoff(self.ttl_s), image_id),
            ).fetchone()
        return None if row is None else image_record(row)

    def mark_processing(self, batch_id: str, image_id: str) -> Transition:
        """pending -> processing (batch queued -> processing). Not applied once final."""
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE images SET status = 'processing'"
                " WHERE batch_id = ? AND image_id = ? AND status = 'pending'",
                (batch_id, image_id),
            ).rowcount
            if changed:
                conn.execute(
                    "UPDATE batches SET version = version + 1,"
                    " status = CASE WHEN status = 'queued' THEN 'processing' ELSE status END"
                    " WHERE batch_id = ?",
                    (batch_id,),
                )
        if not changed:
            return Transition(applied=False)
        self._notify()
        return Transition(applied=True)

    def finish_image(
        self,
        batch_id: str,
        image_id: str,
        status: ImageStatus,
        *,
        sha256: str | None = None,
        error: dict[str, str] | None = None,
        renditions: list[dict[str, Any]] | None = None,
        timings_ms: dict[str, float] | None = None,
        placeholder: str | None = None,
    ) -> Transition:
        """pending|processing -> a final status, counters updated in the same transaction."""
        status = require_final(status)
        bumps = COUNTERS_BY_FINAL_STATUS[status]
        finished = False
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE images SET status = ?, sha256 = COALESCE(?, sha256),"
                " error = COALESCE(?, error), renditions = COALESCE(?, renditions),"
                " timings_ms = COALESCE(?, timings_ms), placeholder = COALESCE(?, placeholder)"
                " WHERE batch_id = ? AND image_id = ? AND status IN ('pending', 'processing')",
                (status, sha256, dump_json(error), dump_json(renditions), dump_json(timings_ms),
                 placeholder, batch_id, image_id),
            ).rowcount  # fmt: skip
            if changed:
                increments = "".join(f", {name} = {name} + 1" for name in bumps)
                # Two steps: the image takes the first, the batch (progress) the second.
                conn.execute(
                    f"UPDATE batches SET pending = pending - 1, version = version + 2{increments},"
                    " status = CASE WHEN status = 'queued' THEN 'processing' ELSE status END"
                    " WHERE batch_id = ?",
                    (batch_id,),
                )
                conn.execute(
                    "UPDATE images SET version ="
                    " (SELECT version - 1 FROM batches WHERE batch_id = ?)"
                    " WHERE batch_id = ? AND image_id = ?",
                    (batch_id, batch_id, image_id),
                )
                finished = self._finish_batch_if_drained(conn, batch_id)
        if not changed:
            return Transition(applied=False)
        self._notify()
        if finished:
            self._prune_now_and_then()
        return Transition(applied=True, batch_finished=finished)

    def cancel_batch(self, batch_id: str) -> tuple[BatchRecord | None, Transition]:
        """Batch -> cancelled; its pending (not processing) images -> cancelled. Idempotent."""
        finished = False
        dropped = 0
        with self._write() as conn:
            row = conn.execute(
                "SELECT version FROM batches"
                " WHERE batch_id = ? AND status IN ('queued', 'processing')",
                (batch_id,),
            ).fetchone()
            changed = row is not None
            if changed:
                # Each dropped image takes a version of its own (upload order), the batch the next.
                base = int(row[0])
                pending_ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT image_id FROM images WHERE batch_id = ? AND status = 'pending'"
                        " ORDER BY seq",
                        (batch_id,),
                    )
                ]
                dropped = len(pending_ids)
                conn.executemany(
                    "UPDATE images SET status = 'cancelled', error = ?, version = ?"
                    " WHERE batch_id = ? AND image_id = ?",
                    [
                        (dump_json(CANCELLED_ERROR), base + rank, batch_id, image_id)
                        for rank, image_id in enumerate(pending_ids, start=1)
                    ],
                )
                conn.execute(
                    "UPDATE batches SET status = 'cancelled', version = ?,"
                    " cancelled = cancelled + ?, pending = pending - ? WHERE batch_id = ?",
                    (base + dropped + 1, dropped, dropped, batch_id),
                )
                finished = self._finish_batch_if_drained(conn, batch_id)
        if changed:
            self._notify()
        transition = Transition(
            applied=bool(changed), batch_finished=finished, cancelled_images=dropped
        )
        return self.get_batch(batch_id), transition

    def batch_changes(
        self, batch_id: str, since_version: int
    ) -> tuple[BatchRecord | None, list[ImageRecord]]:
        """The batch (without images) and its images finished after ``since_version``."""
        with self._lock:
            self._conn.execute("BEGIN")  # one snapshot: counters and images agree
            try:
                row = self._live_batch_row(batch_id)
                rows = []
                if row is not None:
                    rows = self._conn.execute(
                        f"SELECT {IMAGE_COLUMNS} FROM images"
                        " WHERE batch_id = ? AND version > ? ORDER BY version",
                        (batch_id, since_version),
                    ).fetchall()
            finally:
                self._conn.execute("COMMIT")
        if row is None:
            return None, []
        return batch_record(row, []), [image_record(r) for r in rows]

    def unfinished_images(self) -> list[ImageRecord]:
        """Every pending or processing image of every batch, oldest batch first (resume)."""
        columns = ", ".join(f"i.{name.strip()}" for name in IMAGE_COLUMNS.split(","))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {columns} FROM images AS i JOIN batches AS b USING (batch_id)"
                " WHERE i.status IN ('pending', 'processing') ORDER BY b.batch_seq, i.seq"
            ).fetchall()
        return [image_record(row) for row in rows]

    def wait_for_change(self, batch_id: str, since_version: int, timeout_s: float) -> int:
        """Block until the batch's version exceeds ``since_version`` or the timeout; return it.

        An unknown batch returns 0 at once.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                # Read under the condition: a transition committed after this read notifies
                # only once we wait, so no wake-up is lost.
                version = self._version(batch_id)
                remaining = deadline - time.monotonic()
                if version is None:
                    return 0
                if version > since_version or remaining <= 0:
                    return version
                self._changed.wait(min(remaining, POLL_INTERVAL_S))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _version(self, batch_id: str) -> int | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT version FROM batches WHERE batch_id = ? AND {LIVE_BATCH}",
                (batch_id, expiry_cutoff(self.ttl_s)),
            ).fetchone()
        return None if row is None else int(row[0])

    def list_batches(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[BatchRecord], str | None]:
        """Up to ``limit`` batches (without images), newest first, after ``cursor``."""
        return list_batch_page(self._conn, self._lock, limit, cursor, self.ttl_s)

    def delete_batch(self, batch_id: str) -> bool:
        """Forget the batch and its images; False when it is unknown."""
        with self._write() as conn:
            deleted = delete_batch_rows(conn, batch_id)
        if deleted:
            self._notify()  # a waiter on its version learns it is gone
        return deleted
