"""``Client``: the pixelmill HTTP API from synchronous code."""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, overload

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


class Client:
    """A connection to a pixelmill service: ``Client("http://127.0.0.1:8000", api_key=...)``.

    Use it as a context manager, or call ``close()``. Every failed request raises
    ``PixelmillError``.
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
        self._http = httpx.Client(timeout=self._timeout, headers=client_headers(api_key))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- uploads ----------------------------------------------------------------------------

    def create_batch(
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
        response = self._request("POST", "/v1/batches", content=iter(body), headers=body.headers)
        return parse(BatchAccepted, response)

    def create_image(
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
        response = self._request(
            "POST",
            "/v1/images",
            params=params,
            content=iter(body),
            headers=body.headers,
            timeout=request_timeout,
        )
        return parse_image_answer(response)

    # -- batches ----------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """A batch's counts and its images' records."""
        return parse(Batch, self._request("GET", batch_path(batch_id)))

    def list_batches(self, limit: int | None = None, cursor: str | None = None) -> BatchPage:
        """One page of batches, newest first (counts only); pass ``next_cursor`` on."""
        response = self._request("GET", "/v1/batches", params=list_params(limit, cursor))
        return parse(BatchPage, response)

    def iter_batches(self, page_size: int | None = None) -> Iterator[Batch]:
        """Every batch, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_batches(limit=page_size, cursor=cursor)
            yield from page.batches
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch (idempotent): no image of it starts after this returns."""
        return parse(Batch, self._request("POST", f"{batch_path(batch_id)}/cancel"))

    def delete_batch(self, batch_id: str) -> None:
        """Forget a batch (cancelled first if running); its renditions stay."""
        self._request("DELETE", batch_path(batch_id))

    def iter_events(
        self,
        batch_id: str,
        *,
        last_event_id: str | int | None = None,
        reconnect_delay: float | None = None,
        max_reconnects: int = MAX_RECONNECTS,
    ) -> Iterator[Event]:
        """The batch's events (``ProgressEvent``, ``ImageEvent``, ``DoneEvent``) until done.

        A dropped connection is resumed with ``Last-Event-ID``: no image event is repeated or
        skipped (progress events in between are not replayed; the next one has the current
        counts). ``last_event_id`` resumes a stream read earlier (an event's ``id``); from
        the ``DoneEvent``'s id on, the ``DoneEvent`` alone comes again.
        """
        return self._events(batch_id, last_event_id, reconnect_delay, max_reconnects, None)

    def wait(
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
            with closing(events):
                for event in events:
                    if isinstance(event, DoneEvent):
                        return self.get_batch(batch_id)
                    deadline.check()
        except PixelmillError as exc:
            deadline.failed(exc)
        while True:
            try:
                batch = self.get_batch(batch_id)
                deadline.answered()
                if batch.is_finished:
                    return batch
            except PixelmillError as exc:
                deadline.failed(exc)
            deadline.check()
            time.sleep(deadline.poll_delay(poll_interval))

    # -- images -----------------------------------------------------------------------------

    @overload
    def download(self, sha256: str, preset: str, fmt: str, dest: None = None) -> bytes: ...

    @overload
    def download(self, sha256: str, preset: str, fmt: str, dest: PathLike) -> Path: ...

    def download(
        self, sha256: str, preset: str, fmt: str, dest: PathLike | None = None
    ) -> bytes | Path:
        """A rendition's bytes (``fmt``: jpeg, webp, avif or png); with ``dest`` (a file, or
        a folder to put ``<preset>.<ext>`` in) streamed to disk, and its path returned."""
        path = rendition_path(sha256, preset, fmt)
        if dest is None:
            return self._request("GET", path, follow_redirects=True).content
        target = download_target(dest, path)
        part = partial_path(target)
        try:
            with (
                self._stream("GET", path, follow_redirects=True) as response,
                part.open("wb") as file,
            ):
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    file.write(chunk)
            os.replace(part, target)
        except OSError as exc:
            raise naming_target(exc, part, target) from None
        finally:
            part.unlink(missing_ok=True)
        return target

    def manifest(self, sha256: str) -> Manifest:
        """An image's manifest: source facts, every rendition (as URL paths), timings."""
        return parse(Manifest, self._request("GET", image_path(sha256)))

    def delete_image(self, sha256: str) -> None:
        """Erase an image's renditions and manifest; the same bytes later render anew."""
        self._request("DELETE", image_path(sha256))

    def presets(self) -> Catalogue:
        """The service's presets and formats, which ``presets``/``formats`` choose from."""
        return parse(Catalogue, self._request("GET", "/v1/presets"))

    # -- plumbing ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, self.base_url + path, **kwargs)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, f"{method} {self.base_url}{path}") from exc
        return checked(response)

    @contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, self.base_url + path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                yield checked(response)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, f"{method} {self.base_url}{path}") from exc

    def _events(
        self,
        batch_id: str,
        last_event_id: str | int | None,
        reconnect_delay: float | None,
        max_reconnects: int,
        deadline: Deadline | None,
    ) -> Generator[Event, None, None]:
        state = EventStreamState(batch_id, last_event_id)
        failures = 0
        while True:
            read_s = (
                self._events_timeout if deadline is None else deadline.capped(self._events_timeout)
            )
            try:
                with self._stream(
                    "GET",
                    state.path,
                    headers=state.request_headers(),
                    timeout=with_read(self._timeout, read_s),
                ) as response:
                    if deadline is not None:
                        deadline.answered()
                    state.start_connection()
                    if response.status_code == 204:  # it had ended with done already
                        yield state.ended(self.get_batch(batch_id))
                        return
                    for line in response.iter_lines():
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
            time.sleep(delay if deadline is None else deadline.capped(delay))
