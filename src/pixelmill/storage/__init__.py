"""Where originals, renditions and manifests live: a folder or an S3-compatible bucket."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pixelmill.presets_file import ConfigError
from pixelmill.storage.base import (
    RENDITIONS_NOT_STORED,
    SHA256_PATTERN,
    Storage,
    StorageUnavailable,
    StoredObject,
    rendition_url,
)
from pixelmill.storage.folder import (
    FolderStorage,
    LocalStorage,
    remove_unlisted_renditions,
)

if TYPE_CHECKING:  # the settings model (pydantic) is not for the workers to import
    from pixelmill.config import Settings

S3_EXTRA_MISSING = "PIXELMILL_STORAGE=s3://... needs the s3 extra: pip install 'pixelmill[s3]'"


def open_storage(settings: Settings) -> Storage:
    """The storage PIXELMILL_STORAGE names: unset -> the data dir, ``file://<folder>``,
    or ``s3://bucket[/prefix]`` (at PIXELMILL_S3_ENDPOINT_URL; AWS_* credentials)."""
    data_dir = Path(settings.data_dir).resolve()
    location = settings.storage
    public_url = settings.storage_public_url
    if location is None:
        return FolderStorage(data_dir, public_url)
    if location.startswith("file://"):
        return FolderStorage(Path(location.removeprefix("file://")).resolve(), public_url)
    try:
        import boto3  # noqa: F401  (only to know whether the extra is installed)
    except ImportError:
        raise ConfigError(S3_EXTRA_MISSING) from None
    from pixelmill.storage.s3 import S3Storage

    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return S3Storage(
        bucket,
        prefix,
        scratch_root=data_dir / "tmp" / "s3",
        endpoint_url=settings.s3_endpoint_url,
        public_url=public_url,
    )


__all__ = [
    "RENDITIONS_NOT_STORED",
    "SHA256_PATTERN",
    "FolderStorage",
    "LocalStorage",
    "Storage",
    "StorageUnavailable",
    "StoredObject",
    "open_storage",
    "remove_unlisted_renditions",
    "rendition_url",
]
