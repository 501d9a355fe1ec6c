"""A Python client for the pixelmill HTTP service, sync (``Client``) and async
(``AsyncClient``), on httpx.

    from pixelmill.client import Client

    with Client("http://127.0.0.1:8000") as client:
        accepted = client.create_batch(["a.jpg", "b.png"])
        batch = client.wait(accepted.batch_id)

It needs only httpx and pydantic: no Pillow, FastAPI or server code is imported.
Every failed request raises ``PixelmillError`` (this module's, with the HTTP ``status``).
"""

from __future__ import annotations

from pixelmill.client._async import AsyncClient
from pixelmill.client._errors import PixelmillError
from pixelmill.client._models import (
    Batch,
    BatchAccepted,
    BatchPage,
    Catalogue,
    DoneEvent,
    ErrorInfo,
    Event,
    Image,
    ImageAccepted,
    ImageEvent,
    Manifest,
    PresetInfo,
    ProgressEvent,
    Rendition,
    SourceInfo,
    WaitedImage,
)
from pixelmill.client._sync import Client

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchAccepted",
    "BatchPage",
    "Catalogue",
    "Client",
    "DoneEvent",
    "ErrorInfo",
    "Event",
    "Image",
    "ImageAccepted",
    "ImageEvent",
    "Manifest",
    "PixelmillError",
    "PresetInfo",
    "ProgressEvent",
    "Rendition",
    "SourceInfo",
    "WaitedImage",
]
