"""``AsyncClient``: the pixelmill HTTP API from asyncio (or trio) code, as ``Client`` does it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import anyio
import httpx

from pixelmill.client._errors import NETWORK_ERROR, PixelmillError, error_from_transport
from pixelmill.client._models import (
    Batch,
    BatchAccepted,
    BatchPage,
    Catalogue,
    DoneEvent,
    Event,
    ImageAccepted,
    Manifest,
    WaitedImage,
)
from pixelmill.client._sse import EventStreamState
from pixelmill.client._upload import MultipartUpload, PathLike
from pixelmill.client._wire import (
    DEFAULT_TIMEOUT_S,
    DOWNLOAD_CHUNK_BYTES,
    EVENTS_READ_TIMEOUT_S,
    MAX_RECONNECTS,
    WAIT_POLL_INTERVAL_S,
    WAIT_RECONNECTS,
    Deadline,
    as_timeout,
    batch_path,
    checked,
    choice_fields,
    client_headers,
    download_target,
    image_path,
    image_wait,
    list_params,
    naming_target,
    parse,
    parse_image_answer,
    partial_path,
    rendition_path,
    service_url,
    with_read,
)


class AsyncClient:
    """``Client`` for async code: the same methods, awaited; ``iter_events`` an async
    iterator. Use it as ``async with AsyncClient(...)``, or ``await close()``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        *,
        events_timeout: float = EVENTS_READ_TIMEOUT_S,
    ) -> None:
        self.base_url = service_url(base_url)
        self._timeout = as_timeout(timeout)
        self._events_timeout = events_timeout
        self._http = httpx.AsyncClient(timeout=self._timeout, headers=client_headers(api_key))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- uploads ----------------------------------------------------------------------------

    async def create_batch(
        self,
        paths: Sequence[PathLike],
        presets: Sequence[str] | None = None,
        formats: Sequence[str] | None = None,
        callback_url: str | None = None,
    ) -> BatchAccepted:
        """Upload image files as one batch (streamed from disk); answers once accepted."""
        fields = choice_fields(presets, formats)
        if callback_url is not None:
            fields.append(("callback_url", callback_url))
        body = MultipartUpload("files", paths, fields)
        response = await self._request(
            "POST", "/v1/batches", content=aiter(body), headers=body.headers
        )
        return parse(BatchAccepted, response)

    async def create_image(
        self,
        path: PathLike,
        wait: bool = False,
        timeout: float | None = None,
        presets: Sequence[str] | None = None,
        formats: Sequence[str] | None = None,
    ) -> ImageAccepted | WaitedImage:
        """Upload one image. With ``wait`` the service holds its answer until the image is
        finished (up to ``timeout`` s; its default is 30): a ``WaitedImage`` then, else an
        ``ImageAccepted``."""
        body = MultipartUpload("file", [path], choice_fields(presets, formats))
        params, request_timeout = image_wait(wait, timeout, self._timeout)
        response = await self._request(
            "POST",
            "/v1/images",
            params=params,
            content=aiter(body),
            headers=body.headers,
            timeout=request_timeout,
        )
        return parse_image_answer(response)

    # -- batches ----------------------------------------------------------------------------

    async def get_batch(self, batch_id: str) -> Batch:
        """A batch's counts and its images' records."""
        return parse(Batch, await self._request("GET", batch_path(batch_id)))

    async def list_batches(self, limit: int | None = None, cursor: str | None = None) -> BatchPage:
        """One page of batches, newest first (counts only); pass ``next_cursor`` on."""
        response = await self._request("GET", "/v1/batches", params=list_params(limit, cursor))
        return parse(BatchPage, response)

    async def iter_batches(self, page_size: int | None = None) -> AsyncIterator[Batch]:
        """Every batch, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_batches(limit=page_size, cursor=cursor)
            for batch in page.batches:
                yield batch
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch (idempotent): no image of it starts after this returns."""
        return parse(Batch, await self._request("POST", f"{batch_path(batch_id)}/cancel"))

    async def delete_batch(self, batch_id: str) -> None:
        """Forget a batch (cancelled first if running); its renditions stay."""
        await self._request("DELETE", batch_path(batch_id))

    def iter_events(
        self,
        batch_id: str,
        *,
        last_event_id: str | int | None = None,
        reconnect_delay: float | None = None,
        max_reconnects: int = MAX_RECONNECTS,
    ) -> AsyncGenerator[Event, None]:
        """The batch's events (``ProgressEvent``, ``ImageEvent``, ``DoneEvent``) until done.

        A dropped connection is resumed with ``Last-Event-ID``: no image event is repeated or
        skipped (progress events in between are not replayed; the next one has the current
        counts). ``last_event_id`` resumes a stream read earlier (an event's ``id``); from
        the ``DoneEvent``'s id on, the ``DoneEvent`` alone comes again.
        """
        return self._events(batch_id, last_event_id, reconnect_delay, max_reconnects, None)

    async def wait(
        self,
        batch_id: str,
        timeout: float | None = None,
        *,
        poll_interval: float = WAIT_POLL_INTERVAL_S,
    ) -> Batch:
        """Wait until the batch is finished and return its status with every image.

        Follows the event stream; if the stream cannot be had, polls instead. Raises
        ``PixelmillError`` with code ``timeout`` after ``timeout`` seconds, or with the last
        error (``network_error``) if the service did not answer then. Without a
        ``timeout``, gives up once the service has not answered for 30 s.
        """
        deadline = Deadline(batch_id, timeout)
        try:
            events = self._events(batch_id, None, None, WAIT_RECONNECTS, deadline)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, DoneEvent):
                        return await self.get_batch(batch_id)
                    deadline.check()
        except PixelmillError as exc:
            deadline.failed(exc)
        while True:
            try:
                batch = await self.get_batch(batch_id)
                deadline.answered()
                if batch.is_finished:
                    return batch
            except PixelmillError as exc:
                deadline.failed(exc)
            deadline.check()
            await anyio.sleep(deadline.poll_delay(poll_interval))

    # -- images -----------------------------------------------------------------------------

    @overload
    async def download(self, sha256: str, preset: str, fmt: str, dest: None = None) -> bytes: ...

    @overload
    async def download(self, sha256: str, preset: str, fmt: str, dest: PathLike) -> Path: ...

    async def download(
        self, sha256: str, preset: str, fmt: str, dest: PathLike | None = None
    ) -> bytes | Path:
        """A rendition's bytes (``fmt``: jpeg, webp, avif or png); with ``dest`` (a file, or
        a folder to put ``<preset>.<ext>`` in) streamed to disk, and its path returned."""
        path = rendition_path(sha256, preset, fmt)
        if dest is None:
            return (await self._request("GET", path, follow_redirects=True)).content
        target = download_target(dest, path)
        part = partial_path(target)
        try:
            async with (
                self._stream("GET", path, follow_redirects=True) as response,
                await anyio.open_file(part, "wb") as file,
            ):
                async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                    await file.write(chunk)
            await anyio.Path(part).replace(target)
        except OSError as exc:
            raise naming_target(exc, part, target) from None
        finally:
            await anyio.Path(part).unlink(missing_ok=True)
        return target

    async def manifest(self, sha256: str) -> Manifest:
        """An image's manifest: source facts, every rendition (as URL paths), timings."""
        return parse(Manifest, await self._request("GET", image_path(sha256)))

    async def delete_image(self, sha256: str) -> None:
        """Erase an image's renditions and manifest; the same bytes later render anew."""
        await self._request("DELETE", image_path(sha256))

    async def presets(self) -> Catalogue:
        """The service's presets and formats, which ``presets``/``formats`` choose from."""
        return parse(Catalogue, await self._request("GET", "/v1/presets"))

    # -- plumbing ---------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self.base_url + path, **kwargs)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, f"{method} {self.base_url}{path}") from exc
        return checked(response)

    @asynccontextmanager
    async def _stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream(method, self.base_url + path, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                yield checked(response)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, f"{method} {self.base_url}{path}") from exc

    async def _events(
        self,
        batch_id: str,
        last_event_id: str | int | None,
        reconnect_delay: float | None,
        max_reconnects: int,
        deadline: Deadline | None,
    ) -> AsyncGenerator[Event, None]:
        state = EventStreamState(batch_id, last_event_id)
        failures = 0
        while True:
            read_s = (
                self._events_timeout if deadline is None else deadline.capped(self._events_timeout)
            )
            try:
                async with self._stream(
                    "GET",
                    state.path,
                    headers=state.request_headers(),
                    timeout=with_read(self._timeout, read_s),
                ) as response:
                    if deadline is not None:
                        deadline.answered()
                    state.start_connection()
                    if response.status_code == 204:  # it had ended with done already
                        yield state.ended(await self.get_batch(batch_id))
                        return
                    async for line in response.aiter_lines():
                        event = state.feed(line)
                        if event is not None:
                            failures = 0
                            yield event
                            if state.finished:
                                return
                problem = PixelmillError(NETWORK_ERROR, "the event stream ended before 'done'")
            except PixelmillError as exc:
                if not exc.transient:
                    raise
                problem = exc
            if deadline is not None:
                deadline.failed(problem)
            failures += 1
            if failures > max_reconnects:
                raise problem
            delay = state.retry_delay(reconnect_delay, failures)
            await anyio.sleep(delay if deadline is None else deadline.capped(delay))
