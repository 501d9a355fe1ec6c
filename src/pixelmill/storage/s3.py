"""The S3 sibling: renditions, manifests and originals in an S3-compatible bucket (boto3).

Keys are the folder layout under an optional prefix. A render writes into a scratch folder
of its own (``<data>/tmp/s3/<sha>-<pid>-<thread>-<token>``); ``publish`` uploads the
renditions, then the manifest LAST, then empties the scratch folder. The manifest is
therefore authoritative: ``missing_renditions`` reads it alone (one GET), and serving lists
nothing it does not list.

The object crosses into worker processes (pickled with each task): it holds only strings
and paths; its boto3 client lives in a per-process cache (``s3_client.client_for``), built
lazily and rebuilt after a fork, so nothing unpicklable or fork-unsafe travels.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pixelmill.core.encode import TEMP_PREFIX
from pixelmill.core.manifest import MANIFEST_NAME, upgrade_manifest
from pixelmill.core.specs import RenderSpec
from pixelmill.storage.base import (
    IMMUTABLE,
    MANIFEST_MEDIA_TYPE,
    MEDIA_TYPES,
    SHA256_PATTERN,
    StorageUnavailable,
    StoredObject,
    is_plain_filename,
    listed_files,
    manifest_key,
    original_key,
    rendition_key,
    renditions_to_render,
)
from pixelmill.storage.s3_client import NOT_THERE, client_for, default_region, error_code, reason
from pixelmill.storage.scratch import is_stale, remove_tree, scratch_name, writer_of

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
WRITER_META = "pixelmill-writer"  # x-amz-meta-pixelmill-writer: who uploaded an object


@dataclass(frozen=True)
class S3Object(StoredObject):
    """A rendition in a bucket: streamed with (ranged) GETs, never read whole."""

    storage: S3Storage = field(repr=False)
    key: str

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Sends the GET now (an unreachable store raises here, before any response is
        started); the returned iterator streams the body."""
        client, bucket = self.storage.client, self.storage.bucket
        with self.storage.reaching("read a rendition"):
            # IfMatch: an object replaced since its HEAD (a re-render) is not sent under the
            # size and ETag of the old one.
            if start == 0 and end is None:
                response = client.get_object(Bucket=bucket, Key=self.key, IfMatch=self.etag)
            else:
                last = "" if end is None else str(end)
                wanted = f"bytes={start}-{last}"
                response = client.get_object(
                    Bucket=bucket, Key=self.key, Range=wanted, IfMatch=self.etag
                )
            body = response["Body"]
        return _Streamed(body, self.storage)


class _Streamed(Iterator[bytes]):
    """An object's body in chunks; ``close`` ends its GET even before the first chunk (a
    generator closed before it started would leave the connection to the collector)."""

    def __init__(self, body: Any, storage: S3Storage) -> None:
        self.body, self.storage = body, storage
        self.chunks = body.iter_chunks(CHUNK_BYTES)

    def __next__(self) -> bytes:
        with self.storage.reaching("read a rendition"):
            chunk: bytes | None = next(self.chunks, None)
        if chunk is None:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        self.body.close()


class S3Storage:
    """Renditions in ``s3://bucket/prefix`` (at ``endpoint_url``, or AWS when None)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        scratch_root: Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_url: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.scratch_root = Path(scratch_root)
        self.endpoint_url = endpoint_url
        self.region = region or default_region()
        self.public_base = public_url.rstrip("/") if public_url else None

    @property
    def client(self) -> S3Client:
        return client_for(self.endpoint_url, self.region)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS {self.region}"
        location = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{location} at {where}"

    @contextlib.contextmanager
    def reaching(self, what: str) -> Iterator[None]:
        """Turn a failed call into one StorageUnavailable line naming the storage."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"{self.describe()}: cannot {what}: {reason(exc)}") from exc

    def check(self) -> None:
        """HEAD the bucket: a missing bucket, refused credentials or a dead endpoint is one
        line now, not a failure per image later."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            if error_code(exc) in NOT_THERE | {"NoSuchBucket"}:
                why = f"bucket {self.bucket!r} does not exist"
            else:
                why = reason(exc)
            raise StorageUnavailable(f"storage {self.describe()}: {why}") from exc

    # -- renditions ------------------------------------------------------------------------

    def local_dir(self, sha256: str) -> Path:
        """This task's scratch folder for the image (``scratch.scratch_name``): two renders of
        one image (two processes, or two threads of one) never share one."""
        rendition_key(sha256, "")  # checks the digest
        return self.scratch_root / scratch_name(sha256)

    def read_manifest(self, sha256: str) -> dict[str, Any] | None:
        try:
            with self.reaching("read a manifest"):
                response = self.client.get_object(Bucket=self.bucket, Key=self.key(
                    manifest_key(sha256)))  # fmt: skip
                with contextlib.closing(response["Body"]) as stream:
                    # Anyone with write access to the bucket may put anything there: a
                    # manifest of ours is a few kB, a bigger one is not read into memory.
                    body = stream.read(MAX_MANIFEST_BYTES + 1)
        except StorageUnavailable as exc:
            if error_code(exc.__cause__) in NOT_THERE:
                return None
            raise
        if len(body) > MAX_MANIFEST_BYTES:
            log.warning("%s: ignoring the manifest of %s (over %d bytes)", self.describe(),
                        sha256, MAX_MANIFEST_BYTES)  # fmt: skip
            return None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested beyond reason
            return None
        return upgrade_manifest(data) if isinstance(data, dict) else None

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]:
        """From the manifest alone: it is written last and lists only what was stored."""
        return renditions_to_render(self.read_manifest(sha256), spec)

    def has_rendition(self, sha256: str, filename: str) -> bool:
        return self._head(self.key(rendition_key(sha256, filename))) is not None

    def publish(self, sha256: str, folder: Path, filenames: Iterable[str]) -> None:
        """Upload each rendition, then the manifest LAST, then empty the scratch folder.

        Each object names its writer (``folder``): a failed run removes only what it wrote,
        never what a render of the same image elsewhere uploaded and is about to list.
        """
        writer = writer_of(folder)
        for name in filenames:
            extension = name.rpartition(".")[2]
            self._upload(folder / name, rendition_key(sha256, name), MEDIA_TYPES[extension],
                         IMMUTABLE, writer)  # fmt: skip
        # A manifest grows when presets are added: caches revalidate it.
        self._upload(folder / MANIFEST_NAME, manifest_key(sha256), MANIFEST_MEDIA_TYPE,
                     "no-cache", writer)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)

    def _upload(self, path: Path, relative: str, content_type: str, cache: str,
                writer: str) -> None:  # fmt: skip
        with self.reaching(f"store {relative}"), open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=body,
                                   ContentType=content_type, CacheControl=cache,
                                   Metadata={WRITER_META: writer})  # fmt: skip

    def discard_unlisted(self, sha256: str, names: Iterable[str]) -> int:
        """After a run that did not finish (here, or in a process that died): remove its
        scratch folder, and what of ``names`` it uploaded that the manifest does not list
        (one LIST, then a HEAD and a DELETE each). Objects of other writers stay: a render of
        the same image in flight elsewhere lists them soon. An unreadable manifest keeps
        everything."""
        finished = [f for f in self.scratch_root.glob(f"{sha256}-*") if is_stale(f)]
        removed = 0
        try:
            removed = self._remove_unlisted(sha256, names, {writer_of(f) for f in finished})
        finally:
            for folder in finished:
                removed += remove_tree(folder)
        return removed

    def _remove_unlisted(self, sha256: str, names: Iterable[str] | None, writers: set[str]) -> int:
        """Delete the image's objects the manifest does not list, of ``names`` (None: any)
        and uploaded by one of ``writers``."""
        wanted = None if names is None else {n for n in names if is_plain_filename(n)}
        if not writers or wanted == set():
            return 0
        manifest = self.read_manifest(sha256)
        listed = listed_files(manifest) if manifest is not None else set()
        if listed is None:
            return 0
        folder = self.key(rendition_key(sha256, ""))
        with self.reaching("list an image's renditions"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder
            )
            stored = {
                obj["Key"][len(folder) :] for page in pages for obj in page.get("Contents", [])
            }
        removed = 0
        for name in sorted(stored - listed - {MANIFEST_NAME}):
            if not is_plain_filename(name) or (wanted is not None and name not in wanted):
                continue
            head = self._head(folder + name)
            if head is None or head.get("Metadata", {}).get(WRITER_META) not in writers:
                continue
            with self.reaching(f"remove {folder + name}"):
                self.client.delete_object(Bucket=self.bucket, Key=folder + name)
            removed += 1
        return removed

    def remove_temp_files(self, sha256: str) -> int:
        """Remove the image's scratch folders of this process and of dead ones."""
        removed = 0
        for folder in self.scratch_root.glob(f"{sha256}-*"):
            if is_stale(folder):
                removed += remove_tree(folder)
        return removed

    def sweep_temp_files(self) -> int:
        """At start: every scratch folder no living render owns goes, and so do the objects
        its render uploaded that no manifest lists (it died between them and the manifest)."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for folder in self.scratch_root.iterdir():
                if not is_stale(folder):
                    continue
                sha256 = folder.name.partition("-")[0]
                if SHA256_PATTERN.fullmatch(sha256):
                    try:
                        removed += self._remove_unlisted(sha256, None, {writer_of(folder)})
                    except StorageUnavailable as exc:
                        log.warning("cannot remove what a dead render uploaded: %s", exc.message)
                removed += remove_tree(folder)
        return removed

    def open_rendition(self, sha256: str, filename: str) -> StoredObject | None:
        """A rendition the manifest lists (one GET), with its size and ETag (one HEAD)."""
        if not is_plain_filename(filename):
            return None
        manifest = self.read_manifest(sha256)
        listed = listed_files(manifest) if manifest is not None else None
        if not listed or filename not in listed:
            return None
        key = self.key(rendition_key(sha256, filename))
        head = self._head(key)
        if head is None:
            return None
        modified = head["LastModified"].timestamp()
        return S3Object(head["ContentLength"], head["ETag"], modified, None, self, key)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with self.reaching(f"look at {key}"):
                return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except StorageUnavailable as exc:
            if error_code(exc.__cause__) in NOT_THERE:
                return None
            raise

    def public_url(self, sha256: str, filename: str) -> str | None:
        if self.public_base is None:
            return None
        # A prefix may hold spaces or non-ASCII letters: a header carries only a URL's form.
        return f"{self.public_base}/{quote(self.key(rendition_key(sha256, filename)))}"

    def delete_image(self, sha256: str) -> bool:
        """Delete every object under the image's prefix, its manifest first (one LIST, then
        batched DELETEs); False when there was none."""
        folder = self.key(rendition_key(sha256, ""))
        with self.reaching("list an image's renditions"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder
            )
            keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        if not keys:
            return False
        manifest = self.key(manifest_key(sha256))
        with self.reaching(f"remove {manifest}"):
            self.client.delete_object(Bucket=self.bucket, Key=manifest)
        rest = [key for key in keys if key != manifest]
        for start in range(0, len(rest), S3_DELETE_BATCH):
            chunk: list[ObjectIdentifierTypeDef] = [
                {"Key": key} for key in rest[start : start + S3_DELETE_BATCH]
            ]
            with self.reaching(f"remove the renditions under {folder}"):
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
                )
            refused = answer.get("Errors", [])
            if refused:
                first = refused[0]
                raise StorageUnavailable(f"{self.describe()}: cannot remove {first.get('Key')}:"
                                         f" {first.get('Code')}")  # fmt: skip
        return True

    # -- originals (the distributed engine's spool) ----------------------------------------

    def put_original(self, sha256: str, source: Path) -> None:
        with self.reaching("store an original"), open(source, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self.key(original_key(sha256)),
                                   Body=body)  # fmt: skip

    def fetch_original(self, sha256: str, dest: Path) -> bool:
        try:
            with self.reaching("fetch an original"):
                response = self.client.get_object(
                    Bucket=self.bucket, Key=self.key(original_key(sha256))
                )
        except StorageUnavailable as exc:
            if error_code(exc.__cause__) in NOT_THERE:
                return False
            raise
        body = response["Body"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as file, self.reaching("fetch an original"):
                for chunk in body.iter_chunks(1024 * 1024):
                    file.write(chunk)
            os.replace(temp_name, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        finally:
            body.close()
        return True

    def delete_original(self, sha256: str) -> None:
        with self.reaching("remove an original"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(original_key(sha256)))
