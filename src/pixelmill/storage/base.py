"""The storage contract: where originals, renditions and manifests live.

Two siblings implement it: ``folder`` (a local or mounted folder, the default) and ``s3``
(any S3-compatible object store). Keys are the same in both:
``renditions/<sha[:2]>/<sha>/<preset>.<ext>``, ``.../manifest.json`` and, for the
distributed engine's spool, ``originals/<sha>``.

A render always writes into a local folder (``local_dir``) and then ``publish`` makes its
files visible, the manifest last: a manifest's presence means every file it lists is there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pixelmill.core.crop import preset_size
from pixelmill.core.manifest import MANIFEST_NAME, render_result_from_manifest
from pixelmill.core.specs import OutputFormat, RenderSpec
from pixelmill.errors import Unavailable

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: no trailing newline
# Renditions are content-addressed: a key's bytes never change, so caches may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_TYPES = {f.extension: f.media_type for f in OutputFormat}
MANIFEST_MEDIA_TYPE = "application/json"


class StorageUnavailable(Unavailable):
    """The storage cannot be reached or refuses us (endpoint down, bucket gone, credentials).

    The API answers 503 ``unavailable``; a render that meets it fails that image only.
    """


# What an image's record says when its renditions could not be stored: the cause, without
# the endpoint, bucket and keys the exception names (those go to the log).
RENDITIONS_NOT_STORED = "cannot store renditions: the storage does not answer"


def rendition_key(sha256: str, filename: str) -> str:
    """``renditions/<sha[:2]>/<sha>/<filename>``: the same in a folder and in a bucket."""
    if not SHA256_PATTERN.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"renditions/{sha256[:2]}/{sha256}/{filename}"


def manifest_key(sha256: str) -> str:
    return rendition_key(sha256, MANIFEST_NAME)


def original_key(sha256: str) -> str:
    if not SHA256_PATTERN.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"originals/{sha256}"


def is_plain_filename(filename: str) -> bool:
    """A name that stays inside an image's folder (no separators, no hidden or temp files)."""
    return (
        bool(filename)
        and "/" not in filename
        and "\\" not in filename
        and not (filename.startswith("."))
    )


def listed_files(manifest: dict[str, Any]) -> set[str] | None:
    """The file names a manifest lists; None when it has no list we can read."""
    renditions = manifest.get("renditions")
    if not isinstance(renditions, list):
        return None
    return {str(r.get("path")) for r in renditions if isinstance(r, dict)}


def renditions_to_render(manifest: dict[str, Any] | None, spec: RenderSpec) -> frozenset[str]:
    """File names ``spec`` asks for that ``manifest`` does not list at the size asked now."""
    wanted = spec.rendition_names()
    previous = render_result_from_manifest(manifest) if manifest is not None else None
    if previous is None:
        return frozenset(wanted)
    # A rendition counts only at the size its preset asks for now (a box may have changed).
    # The manifest's source size is the displayed one (older manifests are upgraded on
    # read), so it fits the box as it is: no orientation swap here.
    source = previous.source
    expected = {
        f"{p.name}.{f.extension}": preset_size(source.width, source.height, p)
        for p in spec.presets
        for f in spec.formats_of(p)
    }
    have = {r.filename: (r.width, r.height) for r in previous.renditions}
    return frozenset(name for name in wanted if have.get(name) != expected[name])


def rendition_url(sha256: str, filename: str) -> str:
    """The API path a rendition is served at (what records and API manifests list)."""
    return f"/v1/images/{sha256}/{filename}"


@dataclass(frozen=True)
class StoredObject:
    """A rendition as the API serves it: its size, validators and a way to read it."""

    size: int
    etag: str  # quoted, as in an ETag header
    last_modified: float  # POSIX seconds
    path: Path | None  # a local file (served directly), or None (read through ``read``)

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` inclusive (to the end when None), in chunks."""
        raise NotImplementedError


class Storage(Protocol):
    """What engines, workers and the API need of where renditions live.

    Methods that reach a remote store raise ``StorageUnavailable`` when it is down.
    """

    def describe(self) -> str:
        """For logs: ``folder /data`` or ``s3://bucket/prefix at http://...``."""

    def check(self) -> None:
        """Raise ``StorageUnavailable`` (one line) when the storage cannot be used (at start)."""

    def sweep_temp_files(self) -> int:
        """At start: remove temp and scratch files a crashed run left. Returns how many."""

    def local_dir(self, sha256: str) -> Path:
        """The folder a render of this image writes into (its own folder, or a scratch one)."""

    def read_manifest(self, sha256: str) -> dict[str, Any] | None:
        """The image's manifest, or None when it was never (completely) rendered."""

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]:
        """File names ``spec`` asks for that this image does not have yet (all, if new)."""

    def has_rendition(self, sha256: str, filename: str) -> bool:
        """True when the rendition's file is stored (listed or not)."""

    def publish(self, sha256: str, folder: Path, filenames: Iterable[str]) -> None:
        """Make ``filenames`` rendered into ``folder``, then its manifest.json, visible."""

    def discard_unlisted(self, sha256: str, names: Iterable[str]) -> int:
        """After a run that did not finish: remove what of ``names`` the manifest does not
        list (locally and where published), and temp files. Returns how many went."""

    def remove_temp_files(self, sha256: str) -> int:
        """Remove this process's temp files of the image (half-written renditions)."""

    def open_rendition(self, sha256: str, filename: str) -> StoredObject | None:
        """A rendition the manifest lists, or None (also for names that leave the folder)."""

    def public_url(self, sha256: str, filename: str) -> str | None:
        """Where clients may fetch it directly (PIXELMILL_STORAGE_PUBLIC_URL), else None."""

    def put_original(self, sha256: str, source: Path) -> None:
        """Keep an uploaded original under ``originals/<sha256>`` (the distributed spool)."""

    def fetch_original(self, sha256: str, dest: Path) -> bool:
        """Copy ``originals/<sha256>`` to ``dest``; False when it is not there."""

    def delete_original(self, sha256: str) -> None:
        """Remove ``originals/<sha256>`` (no error when it is gone already)."""

    def delete_image(self, sha256: str) -> bool:
        """Erase the image's renditions and manifest (its folder or prefix), the manifest
        first, so a reader never meets a manifest listing a file already gone. False when
        nothing was stored. Renders of the image must not run meanwhile (the caller's rule)."""
