"""Server-Sent Events for one batch: ``image`` per finished image, ``progress``, then ``done``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread

from pixelmill.store import BatchStore

# How long one wait on the store lasts: bounds how late a closed connection is noticed.
WAIT_SLICE_S = 2.0
KEEPALIVE_S = 15.0


def sse_frame(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One SSE message; the JSON is on a single ``data:`` line."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def batch_events(
    store: BatchStore, batch_id: str, limiter: anyio.CapacityLimiter | None = None
) -> AsyncIterator[str]:
    """Stream a batch's progress until it is finished (or it disappears).

    Waits run on ``limiter``'s threads, so many open streams cannot starve other routes.
    """
    announced: set[str] = set()
    last_version = -1
    last_sent = time.monotonic()
    while True:
        record = await anyio.to_thread.run_sync(store.get_batch, batch_id)
        if record is None:  # expired or deleted while we watched
            yield sse_frame("error", {"code": "not_found", "message": f"no batch {batch_id!r}"})
            return
        if record.version != last_version:
            for image in record.images:
                if image.status.is_final and image.image_id not in announced:
                    announced.add(image.image_id)
                    yield sse_frame("image", image.as_api_dict(), record.version)
            yield sse_frame("progress", record.as_api_dict(include_images=False), record.version)
            last_version = record.version
            last_sent = time.monotonic()
        if record.is_finished:
            yield sse_frame("done", record.as_api_dict(include_images=False), record.version)
            return
        await anyio.to_thread.run_sync(
            store.wait_for_change, batch_id, last_version, WAIT_SLICE_S, limiter=limiter
        )
        if time.monotonic() - last_sent >= KEEPALIVE_S:
            yield ": keep-alive\n\n"  # a comment line: keeps proxies from closing the stream
            last_sent = time.monotonic()
