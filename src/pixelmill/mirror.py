"""``pixelmill run --layout mirror``: readable output names instead of content addresses.

Images render as usual into a private content-addressed folder inside OUT (so a second copy
of the same bytes is still rendered once); each finished image's renditions are then placed
at ``OUT/<source path relative to its SRC, without extension>/<preset>.<ext>``, and the
private folder is removed at the end. Every source gets its own files: the first by a hard
link (no copy of the bytes), further copies of the same content by a real copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from pixelmill.engine.base import ErrorInfo, ImageOutcome
from pixelmill.errors import ErrorCode
from pixelmill.runner import is_not_an_image, walk_sources
from pixelmill.states import ImageStatus
from pixelmill.storage import FolderStorage

WORK_PREFIX = ".pixelmill-render-"


class MirrorClash(ValueError):
    """Two sources would write the same output folder (``a.jpg`` and ``a.png``)."""


def mirror_folder(path: str, walked_from: str | None, out: str) -> str:
    """``OUT/<path relative to the SRC folder it was found in, without extension>``; a file
    named as given keeps only its name."""
    relative = os.path.relpath(path, walked_from) if walked_from else os.path.basename(path)
    return os.path.join(out, os.path.splitext(relative)[0])


def mirror_folders(sources: Iterable[str], out: str) -> dict[str, str]:
    """The output folder (under OUT as given) of every file the run will render, by its
    path; raises MirrorClash naming both sources when two would share one."""
    folders: dict[str, str] = {}
    owners: dict[str, str] = {}
    for path, walked_from in walk_sources(sources, skip=out):
        if walked_from is not None and is_not_an_image(path):
            continue  # skipped: writes nothing
        folder = mirror_folder(path, walked_from, out)
        key = os.path.normcase(os.path.normpath(folder))
        if key in owners:
            raise MirrorClash(
                f"{owners[key]} and {path} would both write {folder} with --layout mirror"
            )
        owners[key] = path
        folders[path] = folder
    return folders


class MirrorLayout:
    """Places each finished image's renditions at its readable path (thread-safe)."""

    def __init__(self, out: str, sources: list[str], folders: dict[str, str]) -> None:
        self.out = out
        self.sources = sources
        self.folders = folders
        self.work_dir = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out))
        self.storage = FolderStorage(self.work_dir)
        self._linked: set[str] = set()  # contents already placed once (by a hard link)
        self._lock = threading.Lock()

    def folder_of(self, outcome: ImageOutcome) -> str:
        path = outcome.job.source
        if path in self.folders:
            return self.folders[path]
        # A file that appeared after the clash check: the SRC folder its path starts with.
        walked_from = next(
            (s for s in self.sources if os.path.isdir(s) and path.startswith(os.path.join(s, ""))),
            None,
        )
        return mirror_folder(path, walked_from, self.out)

    def place(self, outcome: ImageOutcome) -> ImageOutcome:
        """``outcome`` once its renditions are at their readable paths, or a failed outcome
        (``insufficient_storage``) when they could not be written there."""
        if outcome.result is None or outcome.status not in (
            ImageStatus.DONE,
            ImageStatus.DUPLICATE,
        ):
            return outcome
        sha256 = outcome.result.sha256
        source_dir = self.storage.image_dir(sha256)
        target = Path(self.folder_of(outcome))
        with self._lock:
            link = sha256 not in self._linked
            self._linked.add(sha256)
        try:
            target.mkdir(parents=True, exist_ok=True)
            for rendition in outcome.result.renditions:
                _place_file(source_dir / rendition.filename, target / rendition.filename, link)
        except OSError as exc:
            error = ErrorInfo(
                ErrorCode.INSUFFICIENT_STORAGE,
                f"cannot write the renditions to {target}: {exc.strerror or exc}",
            )
            return replace(outcome, status=ImageStatus.FAILED, result=None, error=error)
        return outcome

    def close(self) -> None:
        """Remove the private content-addressed folder (its files are linked or copied)."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _place_file(source: Path, target: Path, link: bool) -> None:
    """``target`` becomes ``source``'s bytes at once (never half a file), replacing a file a
    previous run left there."""
    temp = target.with_name(f"{WORK_PREFIX}{target.name}")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    if link:
        try:
            os.link(source, temp)
        except OSError:  # a file system without hard links: copy instead
            shutil.copyfile(source, temp)
    else:
        shutil.copyfile(source, temp)
    os.replace(temp, target)
