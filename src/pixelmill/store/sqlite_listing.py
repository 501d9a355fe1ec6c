"""Listing, expiring and deleting batches in the SQLite store.

Pages follow ``(created_at, batch_id)``, newest first, through an index: a page starts
strictly before the last batch of the previous one (keyset pagination), so a batch created
while a client pages never makes a later page repeat or skip an older batch.

Finished batches older than the TTL are gone to every read (``LIVE_BATCH``), whether or not
a prune has deleted their rows yet: a batch leaves the list when it expires.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

from pixelmill.store.base import BatchRecord, cursor_position, listing_cursor
from pixelmill.store.sqlite_schema import BATCH_COLUMNS, batch_record

# A batch row still alive, given the cutoff of ``expiry_cutoff`` as its parameter.
LIVE_BATCH = "(finished_at IS NULL OR finished_at >= ?)"


def expiry_cutoff(ttl_s: int | None) -> str:
    """The ``finished_at`` before which a batch has expired ("" when nothing expires)."""
    if ttl_s is None:
        return ""
    cutoff = datetime.now(UTC) - timedelta(seconds=ttl_s)
    return cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def list_batch_page(
    conn: sqlite3.Connection,
    lock: threading.RLock,
    limit: int,
    cursor: str | None,
    ttl_s: int | None,
) -> tuple[list[BatchRecord], str | None]:
    """Up to ``limit`` live batches, newest first, created before the one ``cursor`` names."""
    where = f"WHERE {LIVE_BATCH}"
    params: tuple[str, ...] = (expiry_cutoff(ttl_s),)
    if cursor is not None:
        where += " AND (created_at, batch_id) < (?, ?)"
        params += cursor_position(cursor)
    with lock:
        rows = conn.execute(
            f"SELECT {BATCH_COLUMNS} FROM batches {where}"
            " ORDER BY created_at DESC, batch_id DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
    page = [batch_record(row, []) for row in rows[:limit]]
    return page, listing_cursor(page[-1]) if len(rows) > limit else None


def delete_batch_rows(conn: sqlite3.Connection, batch_id: str) -> bool:
    """Inside a write transaction: delete the batch and its images; False when unknown."""
    conn.execute("DELETE FROM images WHERE batch_id = ?", (batch_id,))
    return conn.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,)).rowcount == 1


def delete_expired_rows(conn: sqlite3.Connection, cutoff: str) -> int:
    """Inside a write transaction: delete the batches finished before ``cutoff`` and their
    images; return how many batches."""
    expired = "SELECT batch_id FROM batches WHERE finished_at IS NOT NULL AND finished_at < ?"
    conn.execute(f"DELETE FROM images WHERE batch_id IN ({expired})", (cutoff,))
    return conn.execute(
        "DELETE FROM batches WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,)
    ).rowcount
