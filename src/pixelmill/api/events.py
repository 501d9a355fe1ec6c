"""Server-Sent Events for one batch: ``image`` per finished image, ``progress``, then ``done``.

Every event carries an increasing ``id:``: an ``image`` event the version at which that
image finished, a ``progress`` event the batch's version, ``done`` one past it. A client that
reconnects with ``Last-Event-ID`` gets what happened after that event and nothing twice. Each
round reads only the images finished since the last one sent, never the whole batch.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread

from pixelmill.api.signing import UrlSigner, signed_urls
from pixelmill.store import BatchRecord, BatchStore, StoreUnavailable

# How long one wait on the store lasts: bounds how late a closed connection is noticed.
WAIT_SLICE_S = 2.0
KEEPALIVE_S = 15.0
# How long a browser waits before reconnecting a dropped stream.
RETRY_MS = 3000
# How long a stream waits before asking a store that was unavailable again.
STORE_RETRY_S = 1.0
# ASCII digits only: str.isdigit() also takes superscripts ("²"), which int() refuses.
_EVENT_ID = re.compile(r"[0-9]{1,18}")


def sse_frame(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One SSE message; the JSON is on a single ``data:`` line."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def parse_last_event_id(value: str | None) -> int:
    """The ``Last-Event-ID`` a client sent back, or 0 (from the start) when absent or bad."""
    if value is None or _EVENT_ID.fullmatch(value.strip()) is None:
        return 0
    return int(value.strip())


def done_event_id(record: BatchRecord) -> int:
    """The id of a finished batch's ``done`` event: one past its last version."""
    return record.version + 1


async def batch_events(
    store: BatchStore,
    batch_id: str,
    limiter: anyio.CapacityLimiter | None = None,
    last_event_id: int = 0,
    signer: UrlSigner | None = None,
) -> AsyncIterator[str]:
    """Stream a batch's progress after ``last_event_id`` until it is finished (or disappears).

    Reads and waits run on ``limiter``'s threads, so many open streams cannot starve other
    routes. With a ``signer``, the rendition paths of ``image`` events are signed URLs.
    """
    yield f"retry: {RETRY_MS}\n\n"
    sent = last_event_id
    last_sent = time.monotonic()
    while True:
        try:
            record, finished_images = await anyio.to_thread.run_sync(
                store.batch_changes, batch_id, sent, limiter=limiter
            )
        except StoreUnavailable:  # the store is down for a while: keep the stream, retry
            yield ": store unavailable, waiting\n\n"
            await anyio.sleep(STORE_RETRY_S)
            continue
        if record is None:  # expired or deleted while we watched
            yield sse_frame("error", {"code": "not_found", "message": f"no batch {batch_id!r}"})
            return
        if sent > record.version + (1 if record.is_finished else 0):
            # An id this batch never sent (past its version, or its ``done``): another
            # batch's, or a store that was emptied. Resuming after it would skip the events
            # that take those versions: start over.
            sent = 0
            continue
        for image in finished_images:
            yield sse_frame("image", signed_urls(signer, image.as_api_dict()), image.version)
            sent = max(sent, image.version)
        if record.version > sent:
            yield sse_frame("progress", record.as_api_dict(include_images=False), record.version)
            sent = record.version
            last_sent = time.monotonic()
        if record.is_finished:
            done = record.as_api_dict(include_images=False)
            yield sse_frame("done", done, done_event_id(record))
            return
        try:
            await anyio.to_thread.run_sync(
                store.wait_for_change, batch_id, record.version, WAIT_SLICE_S, limiter=limiter
            )
        except StoreUnavailable:
            await anyio.sleep(STORE_RETRY_S)
        if time.monotonic() - last_sent >= KEEPALIVE_S:
            yield ": keep-alive\n\n"  # a comment line: keeps proxies from closing the stream
            last_sent = time.monotonic()
