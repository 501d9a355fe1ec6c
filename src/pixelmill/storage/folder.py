"""The folder sibling: ``<root>/renditions/<sha[:2]>/<sha>/<preset>.<ext>`` + manifest.json.

Content-addressed: the folder of an image is a pure function of its bytes' SHA-256, so the
same content is rendered once, ever, and a manifest's presence means the work was done.
A render writes straight into the image's folder, so ``publish`` has nothing left to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelmill.core.encode import TEMP_PREFIX, remove_temp_files
from pixelmill.core.manifest import MANIFEST_NAME, read_manifest_file
from pixelmill.core.specs import RenderSpec
from pixelmill.storage.base import (
    StoredObject,
    is_plain_filename,
    listed_files,
    original_key,
    rendition_key,
    renditions_to_render,
)

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredFile(StoredObject):
    """A rendition in a folder: served straight from ``path``."""

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return _file_chunks(self.path, start, end)


def _file_chunks(path: Path | None, start: int, end: int | None) -> Iterator[bytes]:
    assert path is not None
    with open(path, "rb") as file:
        file.seek(start)
        left = (end + 1 - start) if end is not None else None
        while left is None or left > 0:
            chunk = file.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


class FolderStorage:
    """Renditions on a local (or mounted) filesystem under ``root``."""

    def __init__(self, root: Path, public_url: str | None = None) -> None:
        self.root = Path(root)
        self.renditions_root = self.root / "renditions"
        self.public_base = public_url.rstrip("/") if public_url else None

    def describe(self) -> str:
        return f"folder {self.root}"

    def check(self) -> None:
        """A folder is checked where it is written (a full or read-only disk fails renders)."""

    def image_dir(self, sha256: str) -> Path:
        return self.root / rendition_key(sha256, "").rstrip("/")

    def local_dir(self, sha256: str) -> Path:
        return self.image_dir(sha256)

    def manifest_path(self, sha256: str) -> Path:
        return self.image_dir(sha256) / MANIFEST_NAME

    def read_manifest(self, sha256: str) -> dict[str, Any] | None:
        """The image's manifest, or None when it was never (completely) rendered."""
        return read_manifest_file(self.image_dir(sha256))

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]:
        """File names ``spec`` asks for that this image does not have yet (all, if new)."""
        missing = renditions_to_render(self.read_manifest(sha256), spec)
        folder = self.image_dir(sha256)
        # A folder can be tampered with: a listed file that is gone is rendered again.
        gone = {name for name in spec.rendition_names() if not (folder / name).is_file()}
        return missing | gone

    def has_rendition(self, sha256: str, filename: str) -> bool:
        return is_plain_filename(filename) and (self.image_dir(sha256) / filename).is_file()

    def publish(self, sha256: str, folder: Path, filenames: Iterable[str]) -> None:
        """Nothing to do: the render wrote into the image's folder, its manifest last."""

    def rendition_path(self, sha256: str, filename: str) -> Path | None:
        """The file of one rendition, or None (also for names that try to leave the folder)."""
        if not is_plain_filename(filename):
            return None
        path = self.image_dir(sha256) / filename
        return path if path.is_file() else None

    def open_rendition(self, sha256: str, filename: str) -> StoredObject | None:
        """A rendition the manifest lists, or None."""
        manifest = self.read_manifest(sha256)
        listed = listed_files(manifest) if manifest is not None else None
        if not listed or filename not in listed:
            return None
        path = self.rendition_path(sha256, filename)
        if path is None:
            return None
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        etag = f'"{sha256[:32]}-{filename}-{stat.st_size}"'
        return StoredFile(stat.st_size, etag, stat.st_mtime, path)

    def public_url(self, sha256: str, filename: str) -> str | None:
        if self.public_base is None:
            return None
        return f"{self.public_base}/{rendition_key(sha256, filename)}"

    def remove_temp_files(self, sha256: str) -> int:
        return remove_temp_files(self.image_dir(sha256))

    def discard_unlisted(self, sha256: str, names: Iterable[str]) -> int:
        """After a run that did not finish: remove its files that no manifest lists."""
        return remove_unlisted_renditions(self.image_dir(sha256), names)

    def sweep_temp_files(self) -> int:
        """Remove every temp file under the renditions tree (at start-up, after a crash)."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for shard in self.renditions_root.iterdir():
                for folder in shard.iterdir() if shard.is_dir() else ():
                    removed += remove_temp_files(folder)
        removed += remove_temp_files(self.root / "originals")
        return removed

    def delete_image(self, sha256: str) -> bool:
        """Remove the image's folder, its manifest first; False when there was none."""
        folder = self.image_dir(sha256)
        if not folder.is_dir():
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / MANIFEST_NAME)
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # the shard, once its last image is gone
        return True

    # -- originals (the distributed engine's spool) --------------------------------------

    def put_original(self, sha256: str, source: Path) -> None:
        target = self.root / original_key(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_atomically(source, target)

    def fetch_original(self, sha256: str, dest: Path) -> bool:
        source = self.root / original_key(sha256)
        if not source.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_atomically(source, dest)
        except FileNotFoundError:
            return False
        return True

    def delete_original(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / original_key(sha256))


# The name this class had when a folder was the only storage.
LocalStorage = FolderStorage


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temp file beside it: never half there."""
    with open(source, "rb") as reader:  # FileNotFoundError before any temp file exists
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1024 * 1024)
            os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise


def remove_unlisted_renditions(folder: Path, names: Iterable[str]) -> int:
    """Remove the files ``names`` in ``folder`` that its manifest does not list, and temp files.

    The image folder holds only what its manifest lists: what a cancelled, failed or killed
    run wrote must not be served. An unreadable manifest keeps everything (it may list
    them); an emptied folder is removed. Returns how many files went.
    """
    try:
        manifest = read_manifest_file(folder)
    except OSError:
        return remove_temp_files(folder)
    listed = listed_files(manifest) if manifest is not None else set()
    removed = remove_temp_files(folder)
    if listed is None:  # a manifest we cannot make sense of: keep what it may list
        return removed
    for name in set(names) - listed:
        if not is_plain_filename(name):
            continue  # never a rendition's name: nothing of ours to remove
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(folder / name)
            removed += 1
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty: a rendered image keeps its folder
    return removed
