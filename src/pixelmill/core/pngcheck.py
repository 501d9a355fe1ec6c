"""Verify every PNG chunk's CRC, which Pillow does not do for image data (IDAT)."""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from pixelmill.errors import CorruptImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_READ = 1 << 20


def verify_png_crcs(stream: BinaryIO) -> None:
    """Raise CorruptImage when a chunk's CRC is wrong or the chunk list is broken."""
    stream.seek(0)
    if stream.read(8) != PNG_SIGNATURE:
        raise CorruptImage("not a PNG signature")
    while True:
        head = stream.read(8)
        if len(head) < 8:
            raise CorruptImage("PNG ends before its IEND chunk")
        length, chunk_type = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF:
            raise CorruptImage(f"PNG chunk {chunk_type!r} declares an impossible length")
        crc = zlib.crc32(chunk_type)
        remaining = length
        while remaining:
            data = stream.read(min(remaining, _CHUNK_READ))
            if not data:
                raise CorruptImage(f"PNG chunk {chunk_type!r} is truncated")
            crc = zlib.crc32(data, crc)
            remaining -= len(data)
        stored = stream.read(4)
        if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
            raise CorruptImage(f"PNG chunk {chunk_type.decode('latin-1')!r} has a bad CRC")
        if chunk_type == b"IEND":
            return
