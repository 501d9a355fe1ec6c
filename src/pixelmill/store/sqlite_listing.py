"""Listing and deleting batches in the SQLite store.

Pages follow ``(created_at, batch_id)``, newest first, through an index: a page starts
strictly before the last batch of the previous one (keyset pagination), so a batch created
while a client pages never makes a later page repeat or skip an older batch.
"""

from __future__ import annotations

import sqlite3
import threading

from pixelmill.store.base import BatchRecord, cursor_position, listing_cursor
from pixelmill.store.sqlite_schema import BATCH_COLUMNS, batch_record


def list_batch_page(
    conn: sqlite3.Connection, lock: threading.RLock, limit: int, cursor: str | None
) -> tuple[list[BatchRecord], str | None]:
    """Up to ``limit`` batches, newest first, created before the one ``cursor`` names."""
    where = ""
    params: tuple[str, ...] = ()
    if cursor is not None:
        where, params = "WHERE (created_at, batch_id) < (?, ?)", cursor_position(cursor)
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
