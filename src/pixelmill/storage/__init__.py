"""Where originals, renditions and manifests live: a folder or an S3-compatible bucket."""

from pixelmill.storage.base import SHA256_PATTERN, Storage, StoredObject, rendition_url
from pixelmill.storage.folder import (
    LocalStorage,
    RenditionStorage,
    remove_unlisted_renditions,
)

__all__ = [
    "SHA256_PATTERN",
    "LocalStorage",
    "RenditionStorage",
    "Storage",
    "StoredObject",
    "remove_unlisted_renditions",
    "rendition_url",
]
