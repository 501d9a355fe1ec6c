"""The storage the distributed engine's service and workers share, with its originals.

Until the storage package opens every backend itself, the celery engine uses the folder
storage named by ``PIXELMILL_STORAGE=file://<folder>`` (default: the data dir), which every
machine must mount, plus the ``originals/<sha256>`` spool the Storage protocol describes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from pixelmill.config import Settings
from pixelmill.storage import SHA256_PATTERN, LocalStorage, Storage, open_storage


class SharedFolderStorage(LocalStorage):
    """The folder storage with the distributed spool: ``<root>/originals/<sha256>``."""

    def describe(self) -> str:
        return f"folder {self.root}"

    def _original_path(self, sha256: str) -> Path:
        if not SHA256_PATTERN.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / "originals" / sha256

    def put_original(self, sha256: str, source: Path) -> None:
        """Copy ``source`` in atomically (temp file + rename); content-addressed, so a copy
        already there is the same bytes and stays."""
        dest = self._original_path(sha256)
        if dest.is_file():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = dest.with_name(f".{sha256}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(source, temp)
            os.replace(temp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def fetch_original(self, sha256: str, dest: Path) -> bool:
        """Copy ``originals/<sha256>`` to ``dest``; False when it is not there."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self._original_path(sha256), dest)
        except FileNotFoundError:
            return False
        return True

    def delete_original(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._original_path(sha256).unlink()


def open_shared_storage(settings: Settings) -> Storage:
    """The storage ``settings`` name (folder or S3: both keep the originals now)."""
    return open_storage(settings)
