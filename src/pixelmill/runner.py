"""Render files and folders on the local engine: the library's batch entry point.

``render`` does one image in this process; ``render_paths`` walks files and folders,
hashes each file, and runs them all on a process pool, calling back with each outcome.
Both write the content-addressed layout of DESIGN.md under ``out_dir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pixelmill.core.manifest import manifest_dict, write_manifest
from pixelmill.core.render import render_renditions
from pixelmill.core.sniff import HEADER_BYTES, sniff
from pixelmill.core.specs import RenderResult, RenderSpec
from pixelmill.engine.base import ErrorInfo, ImageJob, ImageOutcome
from pixelmill.engine.local import LocalEngine
from pixelmill.errors import CorruptImage, ErrorCode, FileTooLarge, ImageError, UnsupportedFormat
from pixelmill.states import ImageStatus
from pixelmill.storage import FolderStorage

_HASH_CHUNK = 1 << 20
_CANCELLED = ErrorInfo(ErrorCode.CANCELLED, "cancelled before it started")


def render(source: str | Path, out_dir: str | Path, spec: RenderSpec | None = None) -> RenderResult:
    """Render every rendition of one image into ``out_dir`` (in this process) and return it.

    Raises an ``ImageError`` subclass (with a stable ``code``) for a bad image.
    """
    spec = spec or RenderSpec()
    sha256 = hash_file(source, spec.limits.max_bytes)
    folder = FolderStorage(Path(out_dir)).image_dir(sha256)
    result = render_renditions(source, folder, spec, sha256)
    write_manifest(folder, manifest_dict(result))
    return result


def hash_file(path: str | Path, max_bytes: int) -> str:
    """SHA-256 of a file's bytes; FileTooLarge before reading a file over ``max_bytes``."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device could block or never end
            raise UnsupportedFormat("not a regular file")
        if info.st_size > max_bytes:
            raise FileTooLarge(f"{info.st_size} bytes is over the limit of {max_bytes} bytes")
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise CorruptImage(f"cannot read the file: {exc.strerror or exc}") from None
    return digest.hexdigest()


def iter_files(sources: Iterable[str], skip: str | Path | None = None) -> Iterator[str]:
    """Every file under ``sources``: files as given, folders recursively (sorted, no dotfiles,
    only regular files), never anything inside ``skip`` (the output folder)."""
    for path, _ in walk_sources(sources, skip):
        yield path


def walk_sources(
    sources: Iterable[str], skip: str | Path | None = None
) -> Iterator[tuple[str, str | None]]:
    """``iter_files`` with, for each file, the source folder a walk found it in, or None for
    a file named as given: only the files a walk found may be skipped as non-images, and
    the mirror layout names outputs relative to that folder."""
    skipped = os.path.realpath(skip) if skip is not None else None
    for source in sources:
        if not os.path.isdir(source):
            yield source, None
            continue
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(
                d
                for d in dirs
                if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != skipped
            )
            for name in sorted(files):
                path = os.path.join(root, name)
                if not name.startswith(".") and os.path.isfile(path):
                    yield path, source


def is_not_an_image(path: str) -> bool:
    """True when the first bytes announce no format we take (a text file, a licence, a PDF).

    A file that cannot be read is not decided here: rendering reports why it failed.
    """
    try:
        with open(path, "rb") as file:
            header = file.read(HEADER_BYTES)
    except OSError:
        return False
    return sniff(header) is None


@dataclass(frozen=True)
class EngineOptions:
    workers: int = os.cpu_count() or 1
    memory_budget_bytes: int = 640 * 1024 * 1024
    max_tasks_per_child: int = 200


def render_paths(
    sources: Iterable[str],
    out_dir: str | Path,
    on_outcome: Callable[[ImageOutcome], None],
    *,
    spec: RenderSpec | None = None,
    options: EngineOptions | None = None,
    on_engine: Callable[[LocalEngine], None] | None = None,
    on_skipped: Callable[[int, str], None] | None = None,
    skip: str | Path | None = None,
) -> None:
    """Render every file under ``sources`` in parallel; ``on_outcome`` gets each result.

    Runs in bounded memory whatever the number of files. On KeyboardInterrupt the pending
    work is cancelled, temp files are removed and the interrupt is re-raised.
    ``on_engine`` receives the engine before the first job (to cancel it from elsewhere).
    With ``on_skipped``, a file a folder walk found that is not an image by its magic bytes
    is not rendered: ``on_skipped(index, path)`` gets it instead of a failed outcome (a
    folder of photos often holds a README or a licence; a file named by hand still fails).
    ``skip`` is the folder the walk never enters (default: ``out_dir``).
    """
    spec = spec or RenderSpec()
    options = options or EngineOptions()
    storage = FolderStorage(Path(out_dir))
    engine = LocalEngine(
        spec,
        storage,
        workers=options.workers,
        memory_budget_bytes=options.memory_budget_bytes,
        max_tasks_per_child=options.max_tasks_per_child,
        on_outcome=on_outcome,
        queue_size=max(64, 8 * options.workers),
    ).start()
    if on_engine is not None:
        on_engine(engine)
    files = enumerate(walk_sources(sources, skip=out_dir if skip is None else skip))
    # taken from the walk, not yet with the engine
    current: tuple[int, tuple[str, str | None]] | None = None
    try:
        for current in files:
            index, (path, walked_from) = current
            if on_skipped is not None and walked_from is not None and is_not_an_image(path):
                current = None
                on_skipped(index, path)
                continue
            try:
                sha256 = hash_file(path, spec.limits.max_bytes)
            except ImageError as exc:
                current = None
                _report(
                    on_outcome, index, path, ImageStatus.FAILED, ErrorInfo(exc.code, exc.message)
                )
                continue
            engine.submit(ImageJob(str(index), path, sha256))
            current = None
        engine.join()
    except BaseException:
        with _further_interrupts_kill(engine):
            engine.cancel_all()
            engine.shutdown(cancel_pending=True, kill_after_s=2.0)
            for index, (path, _) in [current, *files] if current else files:
                _report(on_outcome, index, path, ImageStatus.CANCELLED, _CANCELLED)
        raise
    engine.shutdown()


@contextlib.contextmanager
def _further_interrupts_kill(engine: LocalEngine) -> Iterator[None]:
    """While cleaning up after Ctrl-C, another Ctrl-C (or SIGTERM) kills the running workers
    at once.

    Raising again would abandon the clean-up half way: workers left writing (temp files
    behind) and images never reported, so the report's counts would not add up.
    """
    stops = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(s, lambda *_: engine.kill_running()) for s in stops]
    except ValueError:  # not the main thread: no KeyboardInterrupt is raised here anyway
        yield
        return
    try:
        yield
    finally:
        for stop, handler in zip(stops, previous, strict=True):
            signal.signal(stop, handler if handler is not None else signal.SIG_DFL)


def _report(
    on_outcome: Callable[[ImageOutcome], None],
    index: int,
    path: str,
    status: ImageStatus,
    error: ErrorInfo,
) -> None:
    """An outcome decided without the engine (unreadable file, or never started)."""
    on_outcome(ImageOutcome(ImageJob(str(index), path, ""), status, None, error))


__all__ = [
    "EngineOptions",
    "ErrorCode",
    "hash_file",
    "is_not_an_image",
    "iter_files",
    "render",
    "render_paths",
    "walk_sources",
]
