"""The streaming multipart parser: spools, hashes and sniffs each file as its bytes arrive."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from pixelmill.api.uploads import UploadForm, clean_filename, receive_upload
from pixelmill.errors import FileTooLarge, InvalidRequest

BOUNDARY = "pixelmill-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def png_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(parts: list[tuple[str, str | None, str | None, bytes]]) -> bytes:
    """A multipart body from (field, filename, content type, data) tuples."""
    out = bytearray()
    for name, filename, content_type, data in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def parse(
    body: bytes,
    spool: Path,
    *,
    chunk: int = 65536,
    max_file: int = 10_000_000,
    max_body: int = 100_000_000,
    content_type: str = CONTENT_TYPE,
) -> UploadForm:
    return asyncio.run(
        receive_upload(
            chunked(body, chunk),
            content_type,
            spool,
            file_fields=frozenset({"files"}),
            text_fields=frozenset({"callback_url"}),
            max_file_bytes=max_file,
            max_body_bytes=max_body,
        )
    )


@pytest.mark.parametrize("chunk", [1, 7, 64, 65536])
def test_files_are_spooled_whole_with_their_hash_whatever_the_chunk_size(
    tmp_path: Path, chunk: int
) -> None:
    """Every file part lands byte-for-byte in its own spool file, with its SHA-256."""
    image = png_bytes()
    body = multipart(
        [
            ("files", "a.png", "image/png", image),
            ("callback_url", None, None, b"http://127.0.0.1:9/hook"),
            ("files", "b.png", "image/jpeg", image),
        ]
    )
    form = parse(body, tmp_path, chunk=chunk)
    assert [f.filename for f in form.files] == ["a.png", "b.png"]
    assert form.fields == {"callback_url": "http://127.0.0.1:9/hook"}
    for spooled in form.files:
        assert spooled.error is None
        assert spooled.path is not None and spooled.path.read_bytes() == image
        assert spooled.sha256 == hashlib.sha256(image).hexdigest()
        assert spooled.detected_type == "image/png"
    assert form.files[1].declared_type == "image/jpeg"  # as declared, mismatch and all


def test_a_non_image_fails_alone_and_leaves_no_file(tmp_path: Path) -> None:
    """Magic bytes decide: text is unsupported_format, and the images beside it are fine."""
    body = multipart(
        [
            ("files", "notes.jpg", "image/jpeg", b"just some text, certainly not a JPEG " * 50),
            ("files", "tiny.gif", "image/gif", b"GIF"),
            ("files", "empty.png", "image/png", b""),
            ("files", "ok.png", "image/png", png_bytes()),
        ]
    )
    form = parse(body, tmp_path, chunk=16)
    codes = [None if f.error is None else f.error["code"] for f in form.files]
    assert codes == ["unsupported_format", "unsupported_format", "unsupported_format", None]
    assert [f.path is None for f in form.files] == [True, True, True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == [form.files[3].image_id]


def test_a_file_over_the_limit_fails_as_file_too_large_and_is_discarded(tmp_path: Path) -> None:
    """Writing stops at the limit; the other files of the request are kept."""
    big = png_bytes((400, 400)) + b"\0" * 5000
    small = png_bytes()
    form = parse(
        multipart([("files", "big.png", None, big), ("files", "small.png", None, small)]),
        tmp_path,
        max_file=len(small) + 10,
        chunk=1000,
    )
    assert form.files[0].error is not None and form.files[0].error["code"] == "file_too_large"
    assert form.files[0].path is None
    assert form.files[1].error is None
    assert [p.name for p in tmp_path.iterdir()] == [form.files[1].image_id]


def test_a_body_over_the_limit_is_refused_and_nothing_stays_spooled(tmp_path: Path) -> None:
    """The body limit applies while it arrives; spooled files of the request are removed."""
    body = multipart([("files", f"{i}.png", None, png_bytes()) for i in range(5)])
    spool = tmp_path / "batch"
    with pytest.raises(FileTooLarge):
        parse(body, spool, max_body=len(body) - 100, chunk=500)
    assert not spool.exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (multipart([("file", "a.png", None, png_bytes())]), CONTENT_TYPE),  # wrong field
        (multipart([("files", "a.png", None, png_bytes())]), "application/json"),
        (multipart([("files", "a.png", None, png_bytes())])[:-40], CONTENT_TYPE),  # cut short
        (multipart([("callback_url", None, None, b"x" * 10_000)]), CONTENT_TYPE),
    ],
    ids=["wrong-field", "not-multipart", "truncated", "huge-text-field"],
)
def test_malformed_requests_are_invalid_and_leave_nothing(
    tmp_path: Path, body: bytes, content_type: str
) -> None:
    spool = tmp_path / "batch"
    with pytest.raises(InvalidRequest):
        parse(body, spool, content_type=content_type)
    assert not spool.exists()


def test_client_filenames_lose_folders_and_control_characters() -> None:
    assert clean_filename("../../etc/passwd", 0) == "passwd"
    assert clean_filename("C:\\photos\\a\x00b.jpg", 0) == "ab.jpg"
    assert clean_filename(None, 2) == "upload-3"
    assert clean_filename("", 0) == "upload-1"
