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

from pixelmill.core.specs import RenderSpec

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


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
    """What engines, workers and the API need of where renditions live."""

    def describe(self) -> str:
        """For logs: ``folder /data`` or ``s3://bucket/prefix at http://...``."""

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

    def remove_temp_files(self, sha256: str) -> int: ...

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
