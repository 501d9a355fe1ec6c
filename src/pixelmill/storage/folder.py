"""Where renditions live: ``<root>/renditions/<sha[:2]>/<sha>/<preset>.<ext>`` + manifest.json.

Content-addressed: the folder of an image is a pure function of its bytes' SHA-256, so the
same content is rendered once, ever, and a manifest's presence means the work was done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from pixelmill.core.encode import remove_temp_files
from pixelmill.core.imaging import fit_size
from pixelmill.core.manifest import (
    MANIFEST_NAME,
    read_manifest_file,
    render_result_from_manifest,
)
from pixelmill.core.specs import RenderSpec
from pixelmill.storage.base import SHA256_PATTERN


class RenditionStorage(Protocol):
    """What the engine needs to know about where renditions go."""

    def image_dir(self, sha256: str) -> Path: ...

    def read_manifest(self, sha256: str) -> dict[str, Any] | None: ...

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]: ...

    def remove_temp_files(self, sha256: str) -> int: ...

    def discard_unlisted(self, sha256: str, names: Iterable[str]) -> int: ...


class LocalStorage:
    """Renditions on a local (or mounted) filesystem under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.renditions_root = self.root / "renditions"

    def image_dir(self, sha256: str) -> Path:
        if not SHA256_PATTERN.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.renditions_root / sha256[:2] / sha256

    def manifest_path(self, sha256: str) -> Path:
        return self.image_dir(sha256) / MANIFEST_NAME

    def read_manifest(self, sha256: str) -> dict[str, Any] | None:
        """The image's manifest, or None when it was never (completely) rendered."""
        return read_manifest_file(self.image_dir(sha256))

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]:
        """File names ``spec`` asks for that this image does not have yet (all, if new)."""
        wanted = spec.rendition_names()
        manifest = self.read_manifest(sha256)
        previous = render_result_from_manifest(manifest) if manifest is not None else None
        if previous is None:
            return frozenset(wanted)
        # A rendition counts only at the size its preset asks for now (a box may have changed).
        # The manifest's source size is the displayed one (older manifests are upgraded on
        # read), so it fits the box as it is: no orientation swap here.
        source = previous.source
        expected = {
            f"{p.name}.{f.extension}": fit_size(source.width, source.height, p.width, p.height)
            for p in spec.presets
            for f in spec.formats
        }
        have = {r.filename: (r.width, r.height) for r in previous.renditions}
        folder = self.image_dir(sha256)
        return frozenset(
            name
            for name in wanted
            if have.get(name) != expected[name] or not (folder / name).is_file()
        )

    def rendition_path(self, sha256: str, filename: str) -> Path | None:
        """The file of one rendition, or None (also for names that try to leave the folder)."""
        if "/" in filename or "\\" in filename or filename.startswith("."):
            return None
        path = self.image_dir(sha256) / filename
        return path if path.is_file() else None

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
        return removed


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
    listed = _listed_files(manifest) if manifest is not None else set()
    removed = remove_temp_files(folder)
    if listed is None:  # a manifest we cannot make sense of: keep what it may list
        return removed
    for name in set(names) - listed:
        if "/" in name or name.startswith("."):
            continue  # never a rendition's name: nothing of ours to remove
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(folder / name)
            removed += 1
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty: a rendered image keeps its folder
    return removed


def _listed_files(manifest: dict[str, Any]) -> set[str] | None:
    """The file names a manifest lists; None when it has no list we can read."""
    renditions = manifest.get("renditions")
    if not isinstance(renditions, list):
        return None
    return {str(r.get("path")) for r in renditions if isinstance(r, dict)}
