"""Batch and image state: SQLite (embedded default) and Redis behind one ``BatchStore``."""

from __future__ import annotations

from pathlib import Path

from pixelmill.store.base import (
    BatchRecord,
    BatchStore,
    ImageRecord,
    NewImage,
    StoreUnavailable,
    Transition,
)
from pixelmill.store.redis import DEFAULT_TTL_S, RedisBatchStore
from pixelmill.store.sqlite import SqliteBatchStore

__all__ = [
    "BatchRecord",
    "BatchStore",
    "ImageRecord",
    "NewImage",
    "RedisBatchStore",
    "SqliteBatchStore",
    "StoreUnavailable",
    "Transition",
    "open_store",
]


def open_store(
    url: str, data_dir: Path, prefix: str = "pixelmill:", ttl_s: int = DEFAULT_TTL_S
) -> BatchStore:
    """The store ``url`` names: ``sqlite`` (a file in ``data_dir``) or a ``redis://`` URL."""
    if url == "sqlite":
        return SqliteBatchStore(Path(data_dir) / "pixelmill.db", ttl_s=ttl_s)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBatchStore(url, prefix=prefix, ttl_s=ttl_s)
    raise ValueError(f"unknown store {url!r}: use 'sqlite' or a redis:// URL")
