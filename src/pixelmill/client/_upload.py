"""Upload bodies: multipart/form-data streamed from files on disk."""

from __future__ import annotations

import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

PathLike = str | os.PathLike[str]
UPLOAD_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class _FilePart:
    path: Path
    size: int
    head: bytes


class MultipartUpload:
    """A multipart/form-data body streamed from files on disk, one file open at a time.

    Sizes are taken up front, so the body has a Content-Length and a missing file fails
    before anything is sent. A file that changes size while it is sent stops the upload.
    """

    def __init__(
        self, file_field: str, paths: Sequence[PathLike], fields: Sequence[tuple[str, str]]
    ) -> None:
        if isinstance(paths, str | os.PathLike):  # one path given bare
            paths = [paths]
        if not paths:
            raise ValueError("give one or more image paths")
        self.boundary = secrets.token_hex(16)
        dash = f"--{self.boundary}\r\n".encode()
        self.fields = b"".join(
            dash
            + f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
            for name, value in fields
        )
        self.files: list[_FilePart] = []
        for given in paths:
            path = Path(given)
            size = path.stat().st_size
            if not path.is_file():
                raise IsADirectoryError(f"not a file: {path}")
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            head = (
                dash
                + f'Content-Disposition: form-data; name="{file_field}"; '
                f'filename="{_quoted(path.name)}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace")
            )
            self.files.append(_FilePart(path, size, head))
        self.trailer = f"--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        length = len(self.fields) + len(self.trailer)
        length += sum(len(part.head) + part.size + 2 for part in self.files)
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(length),
        }

    def __iter__(self) -> Iterator[bytes]:
        yield self.fields
        for part in self.files:
            yield part.head
            with part.path.open("rb") as file:
                sent = 0
                while chunk := file.read(UPLOAD_CHUNK_BYTES):
                    sent += len(chunk)
                    _check_size(part, sent)
                    yield chunk
                _check_size(part, sent, ended=True)
            yield b"\r\n"
        yield self.trailer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.fields
        for part in self.files:
            yield part.head
            file = await anyio.to_thread.run_sync(part.path.open, "rb")
            try:
                sent = 0
                while chunk := await anyio.to_thread.run_sync(file.read, UPLOAD_CHUNK_BYTES):
                    sent += len(chunk)
                    _check_size(part, sent)
                    yield chunk
                _check_size(part, sent, ended=True)
            finally:
                file.close()
            yield b"\r\n"
        yield self.trailer


def _check_size(part: _FilePart, sent: int, ended: bool = False) -> None:
    if sent > part.size or (ended and sent != part.size):
        raise OSError(f"{part.path} changed size while it was uploaded ({part.size} -> {sent})")


def _quoted(filename: str) -> str:
    """A filename as a quoted header parameter (RFC 2616 quoted-string; line breaks, which
    no header can hold, as browsers write them)."""
    escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("\r", "%0D").replace("\n", "%0A")
