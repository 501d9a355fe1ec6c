"""The SQLite store's schema and row conversions."""

from __future__ import annotations

import sqlite3
from typing import Any

from pixelmill.states import BatchStatus, ImageStatus
from pixelmill.store._common import load_choice, load_json
from pixelmill.store.base import BatchRecord, ImageRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_seq    INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order, for resume
    batch_id     TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    total        INTEGER NOT NULL,
    completed    INTEGER NOT NULL DEFAULT 0,
    duplicates   INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    pending      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    finished_at  TEXT,
    callback_url TEXT,
    version      INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS images (
    batch_id      TEXT NOT NULL REFERENCES batches (batch_id),
    image_id      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    filename      TEXT NOT NULL,
    status        TEXT NOT NULL,
    sha256        TEXT,
    spool_path    TEXT,
    declared_type TEXT,
    detected_type TEXT,
    error         TEXT,   -- JSON
    renditions    TEXT,   -- JSON
    timings_ms    TEXT,   -- JSON
    version       INTEGER NOT NULL DEFAULT 0,  -- batch version when it became final
    PRIMARY KEY (batch_id, image_id)
);
CREATE INDEX IF NOT EXISTS images_by_seq ON images (batch_id, seq);
CREATE INDEX IF NOT EXISTS images_unfinished ON images (status)
    WHERE status IN ('pending', 'processing');
"""

# Columns added after the first release: a file from an older one gains them at open,
# a new file right after CREATE TABLE. (table, column, declaration)
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("images", "version", "INTEGER NOT NULL DEFAULT 0"),
    ("images", "placeholder", "TEXT"),
    ("batches", "presets", "TEXT"),  # the request's choice, comma-separated; NULL: all
    ("batches", "formats", "TEXT"),
)

IMAGE_COLUMNS = (
    "image_id, batch_id, filename, status, sha256, spool_path, declared_type, detected_type,"
    " error, renditions, timings_ms, seq, version, placeholder"
)
# After the table exists (a file from an older release gains the column first).
CHANGES_INDEX = "CREATE INDEX IF NOT EXISTS images_by_version ON images (batch_id, version)"
# The listing pages by (created_at, batch_id), newest first.
LISTING_INDEX = "CREATE INDEX IF NOT EXISTS batches_by_creation ON batches (created_at, batch_id)"
BATCH_COLUMNS = (
    "batch_id, status, total, completed, duplicates, failed, cancelled, pending, created_at,"
    " finished_at, callback_url, version, presets, formats"
)


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a file from an older release (or a new one) up to ``ADDED_COLUMNS``."""
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def create_or_upgrade(conn: sqlite3.Connection) -> None:
    """The tables and indexes, with the columns later releases added to older files."""
    conn.executescript(SCHEMA)
    add_missing_columns(conn)
    conn.execute(CHANGES_INDEX)
    conn.execute(LISTING_INDEX)


def image_record(row: tuple[Any, ...]) -> ImageRecord:
    (image_id, batch_id, filename, status, sha256, spool_path, declared_type, detected_type,
     error, renditions, timings_ms, seq, version, placeholder) = row  # fmt: skip
    return ImageRecord(
        image_id=image_id,
        batch_id=batch_id,
        filename=filename,
        status=ImageStatus(status),
        sha256=sha256,
        spool_path=spool_path,
        declared_type=declared_type,
        detected_type=detected_type,
        error=load_json(error),
        renditions=load_json(renditions) or [],
        timings_ms=load_json(timings_ms),
        seq=int(seq),
        version=int(version),
        placeholder=placeholder,
    )


def batch_record(row: tuple[Any, ...], images: list[ImageRecord]) -> BatchRecord:
    (batch_id, status, total, completed, duplicates, failed, cancelled, pending, created_at,
     finished_at, callback_url, version, presets, formats) = row  # fmt: skip
    return BatchRecord(
        batch_id=batch_id,
        status=BatchStatus(status),
        total=total,
        completed=completed,
        duplicates=duplicates,
        failed=failed,
        cancelled=cancelled,
        pending=pending,
        created_at=created_at,
        finished_at=finished_at,
        callback_url=callback_url,
        version=version,
        images=images,
        presets=load_choice(presets),
        formats=load_choice(formats),
    )
