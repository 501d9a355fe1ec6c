"""Listing and deleting batches in the SQLite store.

Pages follow ``batch_seq``, the creation order the table assigns: unique and increasing, so a
page starts strictly after the last batch of the previous one whatever is created meanwhile.
"""

from __future__ import annotations

import re
import sqlite3
import threading

from pixelmill.store.base import BatchRecord, InvalidCursor, decode_cursor, encode_cursor
from pixelmill.store.sqlite_schema import BATCH_COLUMNS, batch_record

_POSITION = re.compile(r"^seq:([0-9]{1,19})$")


def list_batch_page(
    conn: sqlite3.Connection, lock: threading.RLock, limit: int, cursor: str | None
) -> tuple[list[BatchRecord], str | None]:
    """Up to ``limit`` batches, newest first, created before the one ``cursor`` names."""
    before = _position(cursor) if cursor is not None else None
    where = "" if before is None else "WHERE batch_seq < ?"
    params: tuple[int, ...] = (limit + 1,) if before is None else (before, limit + 1)
    with lock:
        rows = conn.execute(
            f"SELECT batch_seq, {BATCH_COLUMNS} FROM batches {where}"
            " ORDER BY batch_seq DESC LIMIT ?",
            params,
        ).fetchall()
    page = rows[:limit]
    next_cursor = encode_cursor(f"seq:{page[-1][0]}") if len(rows) > limit else None
    return [batch_record(row[1:], []) for row in page], next_cursor


def delete_batch_rows(conn: sqlite3.Connection, batch_id: str) -> bool:
    """Inside a write transaction: delete the batch and its images; False when unknown."""
    conn.execute("DELETE FROM images WHERE batch_id = ?", (batch_id,))
    return conn.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,)).rowcount == 1


def _position(cursor: str) -> int:
    match = _POSITION.match(decode_cursor(cursor))
    if match is None:
        raise InvalidCursor(f"not a listing cursor: {cursor[:80]!r}")
    return int(match.group(1))
