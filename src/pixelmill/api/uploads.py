"""Streaming multipart uploads: each file part goes straight to its spool file, hashed on the way.

``await request.form()`` would hand us finished files; parsing the body ourselves lets us sniff
the magic bytes from the first chunk, stop writing a file the moment it is too large or not an
image, and refuse an oversized body while it arrives. Memory stays at one chunk per request.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from pixelmill.core.sniff import HEADER_BYTES, SourceFormat, sniff
from pixelmill.engine.base import Choice
from pixelmill.errors import ErrorCode, FileTooLarge, InsufficientStorage, InvalidRequest

MAX_TEXT_FIELD_BYTES = 8 * 1024
# Header bytes of one part (Content-Disposition, Content-Type, ...): plenty for a filename.
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_FILENAME_CHARS = 255
_UNSAFE_FILENAME_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# On the whole a body must arrive at least this fast (after a first ``client_timeout_s`` of
# grace): a client that drips a byte every few seconds never goes silent for a whole
# timeout, and would otherwise hold a connection and a spool file for days.
MIN_BODY_BYTES_PER_S = 1024


class BodyPace:
    """How long the next chunk of a body may take: within ``timeout_s`` of the last one,
    and no later than ``timeout_s`` plus one second per ``MIN_BODY_BYTES_PER_S`` received."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.started = time.monotonic()

    def next_wait(self, received: int) -> float | None:
        """Seconds to wait for the next chunk (None: no limit); 0 when already too slow."""
        if self.timeout_s is None:
            return None
        allowed = self.timeout_s + received / MIN_BODY_BYTES_PER_S
        left = self.started + allowed - time.monotonic()
        return max(0.0, min(self.timeout_s, left))

    def too_slow(self, received: int) -> UploadTimeout:
        """The error for a chunk that did not come within ``next_wait``."""
        elapsed = time.monotonic() - self.started
        if (
            self.timeout_s is not None
            and elapsed >= self.timeout_s + received / MIN_BODY_BYTES_PER_S
        ):
            return UploadTimeout(
                f"the body arrived slower than {MIN_BODY_BYTES_PER_S} bytes/s "
                f"({received} bytes in {elapsed:.0f} s)"
            )
        return UploadTimeout(f"no part of the body arrived for {self.timeout_s:g} s")


class TooManyFiles(InvalidRequest):
    """More file parts than a batch may hold: 413, with code ``invalid_request``."""

    http_status = 413


class UploadTimeout(InvalidRequest):
    """The client stopped sending mid-body: 408, with code ``invalid_request``."""

    http_status = 408


@dataclass
class SpooledFile:
    """One uploaded file: on disk under the spool (or discarded, with ``error`` set)."""

    image_id: str
    field_name: str
    filename: str
    declared_type: str | None
    path: Path | None
    size: int = 0
    sha256: str | None = None
    detected: SourceFormat | None = None
    error: dict[str, str] | None = None

    @property
    def detected_type(self) -> str | None:
        return None if self.detected is None else f"image/{self.detected.value}"


@dataclass
class UploadForm:
    """What a multipart body held: spooled files in order, and the small text fields."""

    files: list[SpooledFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    spool_dir: Path | None = None
    # The request's choice of presets and formats (None: the whole catalogue).
    choice: Choice = (None, None)

    def discard(self) -> None:
        """Remove every spool file of this upload (the request failed as a whole)."""
        folders = {spooled.path.parent for spooled in self.files if spooled.path is not None}
        if self.spool_dir is not None:
            folders.add(self.spool_dir)
        for spooled in self.files:
            if spooled.path is not None:
                with contextlib.suppress(OSError):
                    spooled.path.unlink()
                spooled.path = None
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or InvalidRequest."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("send the images as multipart/form-data")
    return boundary


def clean_filename(raw: str | None, position: int) -> str:
    """The name a client gave, without folders or control characters (never empty)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("", name).strip()[:MAX_FILENAME_CHARS]
    return name or f"upload-{position + 1}"


class _UploadParser:
    """python-multipart callbacks that spool file parts and collect text fields."""

    def __init__(
        self,
        spool_dir: Path,
        boundary: bytes,
        *,
        file_fields: frozenset[str],
        text_fields: frozenset[str],
        max_file_bytes: int,
        max_files: int,
    ) -> None:
        self.form = UploadForm(spool_dir=spool_dir)
        self._spool_dir = spool_dir
        self._file_fields = file_fields
        self._text_fields = text_fields
        self._max_file_bytes = max_file_bytes
        self._max_files = max_files
        self._header_bytes = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._in_part = False
        self._file: SpooledFile | None = None
        self._handle: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._head = bytearray()  # first bytes of the part, until the format is known
        self._text_name: str | None = None
        self._text = bytearray()
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # -- headers --------------------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._in_part = True
        self._headers = {}
        self._header_bytes = 0

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise InvalidRequest(f"a part's headers are over {MAX_PART_HEADER_BYTES} bytes")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name in self._file_fields:
            if b"filename" not in params:
                # A part without a filename is a text field in HTML forms, not a file.
                raise InvalidRequest(f"each {name!r} part must be a file (with a filename)")
            if len(self.form.files) >= self._max_files:
                raise TooManyFiles(f"a request holds at most {self._max_files} files")
            self._begin_file(name, params.get(b"filename"))
        elif name in self._text_fields:
            if name in self.form.fields or name == self._text_name:
                raise InvalidRequest(f"form field {name!r} is given more than once")
            self._text_name, self._text = name, bytearray()
        else:
            expected = ", ".join(repr(n) for n in sorted(self._file_fields | self._text_fields))
            raise InvalidRequest(f"unexpected form field {name!r}; this route takes {expected}")

    def _begin_file(self, name: str, raw_filename: bytes | None) -> None:
        declared = self._headers.get(b"content-type")
        filename = None if raw_filename is None else raw_filename.decode("utf-8", "replace")
        image_id = uuid.uuid4().hex
        path = self._spool_dir / image_id
        self._file = SpooledFile(
            image_id=image_id,
            field_name=name,
            filename=clean_filename(filename, len(self.form.files)),
            declared_type=None if declared is None else declared.decode("latin-1").strip(),
            path=path,
        )
        self.form.files.append(self._file)
        self._hash = hashlib.sha256()
        self._head.clear()

    # -- data -----------------------------------------------------------------------------

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._text_name is not None:
            self._text += chunk
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise InvalidRequest(f"form field {self._text_name!r} is too long")
            return
        spooled = self._file
        if spooled is None or spooled.error is not None:
            return  # a failed file: the rest of its bytes are read and dropped
        spooled.size += len(chunk)
        if spooled.size > self._max_file_bytes:
            self._fail_file(ErrorCode.FILE_TOO_LARGE, f"over {self._max_file_bytes} bytes")
            return
        self._hash.update(chunk)
        if spooled.detected is None:
            self._head += chunk
            if len(self._head) < HEADER_BYTES:
                return
            if not self._detect():
                return
            chunk, self._head = bytes(self._head), bytearray()
        assert self._handle is not None
        self._handle.write(chunk)

    def _detect(self) -> bool:
        """Sniff the buffered first bytes; False (and the file failed) when not an image."""
        assert self._file is not None
        detected = sniff(bytes(self._head))
        if detected is None:
            what = "an empty file" if not self._head else "not an image format we take"
            self._fail_file(ErrorCode.UNSUPPORTED_FORMAT, f"{what} (by its first bytes)")
            return False
        self._file.detected = detected
        # Only now is there something to keep: a part refused by its first bytes leaves
        # neither a file nor a folder behind.
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        assert self._file.path is not None
        self._handle = open(self._file.path, "wb")  # noqa: SIM115 - closed at part end or fail
        return True

    def _on_part_end(self) -> None:
        self._in_part = False
        if self._text_name is not None:
            self.form.fields[self._text_name] = self._text.decode("utf-8", "replace")
            self._text_name = None
            return
        spooled = self._file
        # A file shorter than HEADER_BYTES is sniffed only now, from all it had.
        if (
            spooled is not None
            and spooled.error is None
            and (spooled.detected is not None or self._detect())
        ):
            assert self._handle is not None
            self._handle.write(self._head)
            self._head.clear()
            self._close_handle()
            spooled.sha256 = self._hash.hexdigest()
        self._file = None

    def _fail_file(self, code: ErrorCode, message: str) -> None:
        """Stop spooling the current file: close and remove it, and record why."""
        spooled = self._file
        assert spooled is not None
        spooled.error = {"code": code.value, "message": message}
        self._close_handle()
        if spooled.path is not None:
            with contextlib.suppress(OSError):
                spooled.path.unlink()
        spooled.path = None

    def _close_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def finish(self) -> None:
        """After the last chunk: the body must have ended cleanly."""
        self.parser.finalize()
        if self._in_part:
            raise InvalidRequest("the multipart body ended in the middle of a part")

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the flush again: nothing to keep
            self._close_handle()
        self.form.discard()


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    spool_dir: Path,
    *,
    file_fields: frozenset[str],
    text_fields: frozenset[str] = frozenset(),
    max_file_bytes: int,
    max_body_bytes: int,
    max_files: int = 10_000,
    chunk_timeout_s: float | None = None,
) -> UploadForm:
    """Parse a multipart body chunk by chunk, spooling files; on any error nothing stays.

    Each chunk must arrive within ``chunk_timeout_s`` (None: no limit), and the body at
    ``MIN_BODY_BYTES_PER_S`` on the whole (see ``BodyPace``): a client that goes silent or
    drips mid-body is UploadTimeout, not a socket and a spool file held for ever.
    """
    parser = _UploadParser(
        spool_dir,
        multipart_boundary(content_type),
        file_fields=file_fields,
        text_fields=text_fields,
        max_file_bytes=max_file_bytes,
        max_files=max_files,
    )
    received = 0
    pace = BodyPace(chunk_timeout_s)
    try:
        while True:
            try:
                with anyio.fail_after(pace.next_wait(received)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise pace.too_slow(received) from None
            received += len(chunk)
            if received > max_body_bytes:
                raise FileTooLarge(f"the request body is over {max_body_bytes} bytes")
            if chunk:
                # File writes and hashing are blocking work: keep them off the event loop.
                await anyio.to_thread.run_sync(parser.parser.write, chunk)
        parser.finish()
    except MultipartParseError as exc:
        parser.abort()
        raise InvalidRequest(f"malformed multipart body: {exc}") from None
    except OSError as exc:
        parser.abort()
        if exc.errno in _DISK_FULL:
            raise InsufficientStorage(
                "no space left to store the upload; try again later"
            ) from None
        raise
    except BaseException:
        parser.abort()
        raise
    return parser.form
