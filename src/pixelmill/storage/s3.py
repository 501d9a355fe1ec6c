"""The S3 sibling: renditions, manifests and originals in an S3-compatible bucket (boto3).

Keys are the folder layout under an optional prefix. A render writes into a scratch folder
of its own process (``<data>/tmp/s3/<sha>-<pid>``); ``publish`` uploads the renditions, then
the manifest LAST, then empties the scratch folder. The manifest is therefore authoritative:
``missing_renditions`` reads it alone (one GET), and serving lists nothing it does not list.

The object crosses into worker processes (pickled with each task): it holds only strings
and paths; its boto3 client lives in a per-process cache (``_client_for``), built lazily and
rebuilt after a fork, so nothing unpicklable or fork-unsafe travels.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelmill.core.encode import TEMP_PREFIX
from pixelmill.core.manifest import MANIFEST_NAME, upgrade_manifest
from pixelmill.core.specs import RenderSpec
from pixelmill.storage.base import (
    IMMUTABLE,
    MANIFEST_MEDIA_TYPE,
    MEDIA_TYPES,
    StorageUnavailable,
    StoredObject,
    is_plain_filename,
    listed_files,
    manifest_key,
    original_key,
    rendition_key,
    renditions_to_render,
)

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
DEFAULT_REGION = "us-east-1"
_NOT_THERE = frozenset({"404", "NoSuchKey", "NotFound"})

# One client per process and endpoint (building one costs tens of milliseconds; a client
# must not cross a fork). Reset when the process id changes.
_clients: dict[tuple[str | None, str], Any] = {}
_clients_pid = 0
_clients_lock = threading.Lock()


def _client_for(endpoint_url: str | None, region: str) -> S3Client:
    global _clients_pid
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get((endpoint_url, region))
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
                # S3-compatible stores (SeaweedFS, MinIO) rarely resolve virtual hosts.
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            session = boto3.session.Session()
            client = session.client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
            _clients[(endpoint_url, region)] = client
        return client


def default_region() -> str:
    """The region of the usual AWS chain (AWS_REGION, AWS_DEFAULT_REGION, config), else
    ``us-east-1`` (what S3-compatible stores expect)."""
    import boto3

    return boto3.session.Session().region_name or DEFAULT_REGION


def _reason(exc: Exception) -> str:
    """One line saying why a call failed."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}): check the credentials"
        message = error.get("Message") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", ""
        )
        return f"{code} {message}".strip()
    return " ".join(str(exc).split()) or type(exc).__name__


def _error_code(exc: BaseException | None) -> str:
    """The S3 error code of a failed call ("NoSuchKey", "404", ...), or ""."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


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
            if start == 0 and end is None:
                body = client.get_object(Bucket=bucket, Key=self.key)["Body"]
            else:
                last = "" if end is None else str(end)
                wanted = f"bytes={start}-{last}"
                body = client.get_object(Bucket=bucket, Key=self.key, Range=wanted)["Body"]
        return _streamed(body, self.storage)


def _streamed(body: Any, storage: S3Storage) -> Iterator[bytes]:
    try:
        with storage.reaching("read a rendition"):
            yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


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
        return _client_for(self.endpoint_url, self.region)

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
            raise StorageUnavailable(f"{self.describe()}: cannot {what}: {_reason(exc)}") from exc

    def check(self) -> None:
        """HEAD the bucket: a missing bucket, refused credentials or a dead endpoint is one
        line now, not a failure per image later."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            if _error_code(exc) in _NOT_THERE | {"NoSuchBucket"}:
                reason = f"bucket {self.bucket!r} does not exist"
            else:
                reason = _reason(exc)
            raise StorageUnavailable(f"storage {self.describe()}: {reason}") from exc

    # -- renditions ------------------------------------------------------------------------

    def local_dir(self, sha256: str) -> Path:
        """This process's scratch folder for the image (two processes never share one)."""
        rendition_key(sha256, "")  # checks the digest
        return self.scratch_root / f"{sha256}-{os.getpid()}"

    def read_manifest(self, sha256: str) -> dict[str, Any] | None:
        try:
            with self.reaching("read a manifest"):
                response = self.client.get_object(Bucket=self.bucket, Key=self.key(
                    manifest_key(sha256)))  # fmt: skip
                body = response["Body"].read()
        except StorageUnavailable as exc:
            if _error_code(exc.__cause__) in _NOT_THERE:
                return None
            raise
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return upgrade_manifest(data) if isinstance(data, dict) else None

    def missing_renditions(self, sha256: str, spec: RenderSpec) -> frozenset[str]:
        """From the manifest alone: it is written last and lists only what was stored."""
        return renditions_to_render(self.read_manifest(sha256), spec)

    def has_rendition(self, sha256: str, filename: str) -> bool:
        return self._head(self.key(rendition_key(sha256, filename))) is not None

    def publish(self, sha256: str, folder: Path, filenames: Iterable[str]) -> None:
        """Upload each rendition, then the manifest LAST, then empty the scratch folder."""
        for name in filenames:
            extension = name.rpartition(".")[2]
            self._upload(folder / name, rendition_key(sha256, name), MEDIA_TYPES[extension],
                         IMMUTABLE)  # fmt: skip
        # A manifest grows when presets are added: caches revalidate it.
        self._upload(folder / MANIFEST_NAME, manifest_key(sha256), MANIFEST_MEDIA_TYPE,
                     "no-cache")  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)

    def _upload(self, path: Path, relative: str, content_type: str, cache: str) -> None:
        with self.reaching(f"store {relative}"), open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=body,
                                   ContentType=content_type, CacheControl=cache)  # fmt: skip

    def discard_unlisted(self, sha256: str, names: Iterable[str]) -> int:
        """Remove the scratch folder, and every stored one of ``names`` the manifest does not
        list (one LIST, then a DELETE each). An unreadable manifest keeps everything."""
        removed = self.remove_temp_files(sha256)
        manifest = self.read_manifest(sha256)
        listed = listed_files(manifest) if manifest is not None else set()
        if listed is None:
            return removed
        unlisted = {n for n in names if is_plain_filename(n)} - listed
        if not unlisted:
            return removed
        folder = self.key(rendition_key(sha256, ""))
        with self.reaching("list an image's renditions"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder
            )
            stored = {obj["Key"] for page in pages for obj in page.get("Contents", [])}
        for name in sorted(unlisted):
            key = folder + name
            if key in stored:
                with self.reaching(f"remove {key}"):
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                removed += 1
        return removed

    def remove_temp_files(self, sha256: str) -> int:
        """Remove the image's scratch folders of this process and of dead ones."""
        removed = 0
        for folder in self.scratch_root.glob(f"{sha256}-*"):
            if _is_stale(folder):
                removed += _remove_tree(folder)
        return removed

    def sweep_temp_files(self) -> int:
        """At start: every scratch folder no living process owns goes."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for folder in self.scratch_root.iterdir():
                if _is_stale(folder):
                    removed += _remove_tree(folder)
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
            if _error_code(exc.__cause__) in _NOT_THERE:
                return None
            raise

    def public_url(self, sha256: str, filename: str) -> str | None:
        if self.public_base is None:
            return None
        return f"{self.public_base}/{self.key(rendition_key(sha256, filename))}"

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
            if _error_code(exc.__cause__) in _NOT_THERE:
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


def _is_stale(folder: Path) -> bool:
    """A scratch folder ``<sha>-<pid>`` of this process or of a process that is gone."""
    pid_text = folder.name.rpartition("-")[2]
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove_tree(folder: Path) -> int:
    """Remove ``folder`` and its files; returns how many files went."""
    count = sum(1 for entry in folder.rglob("*") if entry.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return count
