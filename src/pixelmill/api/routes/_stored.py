"""A rendition read through ``StoredObject.read`` (an S3 object), answered as Starlette's
FileResponse answers a file: 200, 206 for one range, 206 multipart/byteranges for several,
If-Range honoured, no body for HEAD.

The body is streamed in chunks (one ranged GET per range), never read whole into memory.
The first GET is sent before the status line: a store that fails then is a 503 envelope,
not a response cut short. A client that goes away stops the transfer (and its GET).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from email.utils import formatdate
from typing import cast

import anyio
from fastapi.responses import FileResponse, Response
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import Receive, Scope, Send

from pixelmill.storage import StorageUnavailable, StoredObject

log = logging.getLogger(__name__)


class StreamedRendition(Response):
    """An object of a storage, with the headers FileResponse would give a file."""

    def __init__(self, stored: StoredObject, media_type: str, headers: dict[str, str]) -> None:
        super().__init__(None, media_type=media_type, headers=headers)
        self.stored = stored
        self.headers["content-length"] = str(stored.size)
        self.headers["accept-ranges"] = "bytes"
        self.headers["last-modified"] = formatdate(stored.last_modified, usegmt=True)

    def _ranges(self, request_headers: Headers) -> list[tuple[int, int]]:
        """The byte ranges to send, end exclusive; [] for the whole object. The route has
        answered a malformed or unsatisfiable Range already."""
        wanted = request_headers.get("range")
        if_range = request_headers.get("if-range")
        if wanted is None:
            return []
        if if_range is not None and if_range not in (
            self.headers["etag"],
            self.headers["last-modified"],
        ):
            return []  # the client's copy is stale: the whole object, as FileResponse does
        return FileResponse._parse_range_header(wanted, self.stored.size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ranges = self._ranges(Headers(scope=scope))
        size = self.stored.size
        headers = MutableHeaders(raw=list(self.raw_headers))
        status = 200
        parts: list[tuple[int, int | None, bytes]] = [(0, None, b"")]
        closing = b""
        if len(ranges) == 1:
            (start, end), status = ranges[0], 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
            headers["content-length"] = str(end - start)
            parts = [(start, end - 1, b"")]
        elif ranges:
            status, boundary = 206, secrets.token_hex(13)
            # FileResponse's own part headers and length (the method does not use its self).
            length, part_header = FileResponse.generate_multipart(
                cast(FileResponse, self), ranges, boundary, size, self.headers["content-type"]
            )
            headers["content-type"] = f"multipart/byteranges; boundary={boundary}"
            headers["content-length"] = str(length)
            parts = [(start, end - 1, part_header(start, end)) for start, end in ranges]
            closing = f"--{boundary}--".encode("latin-1")
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": status, "headers": headers.raw})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        first = await run_in_threadpool(self.stored.read, parts[0][0], parts[0][1])
        await send({"type": "http.response.start", "status": status, "headers": headers.raw})
        async with anyio.create_task_group() as task_group:

            async def stream() -> None:
                try:
                    await self._send_parts(send, parts, first, closing, multipart=len(ranges) > 1)
                except StorageUnavailable as exc:  # mid-body: the connection is cut short
                    log.warning("%s", exc.message)
                task_group.cancel_scope.cancel()

            task_group.start_soon(stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            task_group.cancel_scope.cancel()

    async def _send_parts(
        self,
        send: Send,
        parts: list[tuple[int, int | None, bytes]],
        first: Iterator[bytes],
        closing: bytes,
        *,
        multipart: bool,
    ) -> None:
        for index, (start, last, part_header) in enumerate(parts):
            if index == 0:
                chunks = first
            else:
                chunks = await run_in_threadpool(self.stored.read, start, last)
            try:
                if part_header:
                    await send(
                        {"type": "http.response.body", "body": part_header, "more_body": True}
                    )
                async for chunk in iterate_in_threadpool(chunks):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if multipart:
                    await send({"type": "http.response.body", "body": b"\r\n", "more_body": True})
            finally:
                with contextlib.suppress(Exception):  # ends its GET (a cancelled transfer)
                    _close(chunks)
        await send({"type": "http.response.body", "body": closing, "more_body": False})


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
