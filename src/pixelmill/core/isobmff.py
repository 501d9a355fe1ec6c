"""Read a HEIF/AVIF image's displayed size from its ISOBMFF boxes, in Python, bounded.

libheif and libavif parse the whole file in native code before they tell the size. The
service only needs the size (for the pixel limit and the memory estimate), so it reads the
few boxes that state it: ``meta`` > ``pitm`` (the primary item) and ``iprp`` > ``ipco``
(properties: ``ispe`` size, ``clap`` crop, ``irot`` rotation, ``auxC`` alpha) with ``ipma``
(which item has which property), and ``iref`` ``auxl`` (an alpha plane of the primary).
Every count and size is capped, and every box must lie inside its parent, so hostile bytes
end as ``CorruptImage`` after a bounded amount of work.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pixelmill.errors import CorruptImage

MAX_TOP_LEVEL_BOXES = 1_000
MAX_CHILD_BOXES = 10_000  # per container (ipco of a big grid lists many properties)
MAX_META_BYTES = 16 * 1024 * 1024  # Exif/XMP live in mdat or idat; a bigger meta is hostile
# Item entries plus property indices over all ipma boxes, and item ids over all iref
# references: each costs Python work and memory in the service process, so a meta box full
# of them must end quickly (real files hold at most a few thousand: one per grid tile).
MAX_ASSOCIATIONS = 200_000
MAX_REFERENCES = 200_000
_HEADER = struct.Struct(">I4s")
_ALPHA_URNS = (b"urn:mpeg:hevc:2015:auxid:1", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha")


@dataclass(frozen=True)
class IsobmffImage:
    width: int
    height: int
    has_alpha: bool
    grey: bool  # one colour channel (``pixi``)
    # What the decoder allocates: the coded size (ispe), before a clap crop makes it smaller.
    coded_pixels: int


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int  # offset of the payload within its buffer
    end: int


def read_image_size(stream: BinaryIO, apply_transforms: bool = True) -> IsobmffImage:
    """The primary image's size (after ``clap`` and ``irot`` when ``apply_transforms``, as
    libheif decodes; before them as Pillow's AVIF plugin does, which turns them into an EXIF
    orientation) and its channels. Raises CorruptImage when the boxes are damaged or say no
    size."""
    meta = _read_meta(stream)
    boxes = {box.kind: box for box in _children(meta, _full_box_start(meta, 0), len(meta))}
    if b"pitm" not in boxes or b"iprp" not in boxes:
        raise CorruptImage("the HEIF/AVIF meta box has no primary item or no properties")
    primary = _primary_item(meta, boxes[b"pitm"])
    iprp = boxes[b"iprp"]
    parts = list(_children(meta, iprp.start, iprp.end))
    ipco = next((b for b in parts if b.kind == b"ipco"), None)
    if ipco is None:
        raise CorruptImage("the HEIF/AVIF properties have no ipco box")
    properties = list(_children(meta, ipco.start, ipco.end))
    associations = _associations([b for b in parts if b.kind == b"ipma"], meta)
    primary_properties = associations.get(primary, [])
    width, height, coded_pixels = _displayed_size(
        meta, properties, primary_properties, apply_transforms
    )
    grey = any(_is_grey(meta, properties, i) for i in primary_properties)
    alpha_items = {
        item
        for item, indices in associations.items()
        if any(_is_alpha(meta, properties, i) for i in indices)
    }
    has_alpha = b"iref" in boxes and _has_alpha_plane(meta, boxes[b"iref"], primary, alpha_items)
    return IsobmffImage(width, height, has_alpha, grey, coded_pixels)


def _read_meta(stream: BinaryIO) -> bytes:
    """The payload of the top-level ``meta`` box (seeking past ``mdat`` and the rest)."""
    stream.seek(0, 2)
    file_end = stream.tell()
    offset = 0
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if offset >= file_end:
            break
        stream.seek(offset)
        kind, payload_start, end = _box_header(stream.read(16), offset, file_end)
        if kind == b"meta":
            size = end - payload_start
            if size > MAX_META_BYTES:
                raise CorruptImage(f"the HEIF/AVIF meta box declares {size} bytes")
            stream.seek(payload_start)
            payload = stream.read(size)
            if len(payload) != size:
                raise CorruptImage("the HEIF/AVIF meta box is truncated")
            return payload
        offset = end
    raise CorruptImage("no HEIF/AVIF meta box (truncated or not an image file)")


def _box_header(head: bytes, offset: int, limit: int) -> tuple[bytes, int, int]:
    """(type, payload start, end) of the box at ``offset`` whose bytes start with ``head``."""
    if len(head) < 8:
        raise CorruptImage("a HEIF/AVIF box header is truncated")
    size, kind = _HEADER.unpack_from(head)
    header = 8
    if size == 1:  # a 64-bit size follows
        if len(head) < 16:
            raise CorruptImage("a HEIF/AVIF box header is truncated")
        size = struct.unpack_from(">Q", head, 8)[0]
        header = 16
    elif size == 0:  # "to the end of the enclosing container"
        size = limit - offset
    if size < header or offset + size > limit:
        raise CorruptImage(f"HEIF/AVIF box {kind!r} has an impossible size {size}")
    return kind, offset + header, offset + size


def _children(data: bytes, start: int, end: int) -> Iterator[_Box]:
    offset = start
    for _ in range(MAX_CHILD_BOXES):
        if offset >= end:
            return
        kind, payload_start, box_end = _box_header(data[offset : offset + 16], offset, end)
        yield _Box(kind, payload_start, box_end)
        offset = box_end
    raise CorruptImage("a HEIF/AVIF container holds too many boxes")


def _full_box_start(data: bytes, start: int) -> int:
    """Skip a FullBox's version and flags."""
    if len(data) < start + 4:
        raise CorruptImage("a HEIF/AVIF box is truncated")
    return start + 4


def _unpack(fmt: str, data: bytes, offset: int, end: int) -> tuple[int, ...]:
    if offset + struct.calcsize(fmt) > end:
        raise CorruptImage("a HEIF/AVIF box is shorter than its fields")
    return struct.unpack_from(fmt, data, offset)


def _primary_item(data: bytes, pitm: _Box) -> int:
    version = _unpack(">B", data, pitm.start, pitm.end)[0]
    return _unpack(">I" if version else ">H", data, pitm.start + 4, pitm.end)[0]


def _associations(ipmas: list[_Box], data: bytes) -> dict[int, list[int]]:
    """item id -> 1-based ipco property indices, in the order they apply."""
    result: dict[int, list[int]] = {}
    total = 0
    for ipma in ipmas:
        (version_and_flags,) = _unpack(">I", data, ipma.start, ipma.end)
        version, wide_index = version_and_flags >> 24, version_and_flags & 1
        offset = ipma.start + 4
        (count,) = _unpack(">I", data, offset, ipma.end)
        offset += 4
        for _ in range(count):
            item_format = ">I" if version else ">H"
            (item,) = _unpack(item_format, data, offset, ipma.end)
            offset += struct.calcsize(item_format)
            (n,) = _unpack(">B", data, offset, ipma.end)
            offset += 1
            total += 1 + n
            if total > MAX_ASSOCIATIONS:
                raise CorruptImage("too many HEIF/AVIF property associations")
            indices = result.setdefault(item, [])
            for _ in range(n):
                if wide_index:
                    indices.append(_unpack(">H", data, offset, ipma.end)[0] & 0x7FFF)
                    offset += 2
                else:
                    indices.append(_unpack(">B", data, offset, ipma.end)[0] & 0x7F)
                    offset += 1
    return result


def _property(properties: list[_Box], index: int) -> _Box | None:
    return properties[index - 1] if 1 <= index <= len(properties) else None


def _displayed_size(
    data: bytes, properties: list[_Box], indices: list[int], apply_transforms: bool
) -> tuple[int, int, int]:
    """The primary item's ispe, then its transforms (clap, irot) in their order; and the
    largest coded size (in pixels) an ispe states."""
    size: tuple[int, int] | None = None
    coded_pixels = 0
    for index in indices:
        box = _property(properties, index)
        if box is None:
            continue  # index 0 means "no property"; a dangling one is ignored, as libheif does
        if box.kind == b"ispe":
            width, height = _unpack(">II", data, box.start + 4, box.end)
            size = (width, height)
            coded_pixels = max(coded_pixels, width * height)
        elif not apply_transforms or size is None:
            continue
        elif box.kind == b"clap":
            size = _clean_aperture(data, box, size)
        elif box.kind == b"irot" and _quarter_turns(data, box) % 2:
            size = (size[1], size[0])  # turned 90 or 270 degrees
    if size is None:
        raise CorruptImage("the HEIF/AVIF primary image states no size (ispe)")
    return size[0], size[1], coded_pixels


def _quarter_turns(data: bytes, box: _Box) -> int:
    return int(_unpack(">B", data, box.start, box.end)[0] & 3)


def _clean_aperture(data: bytes, box: _Box, size: tuple[int, int]) -> tuple[int, int]:
    """The crop a ``clap`` box makes (never larger than the image)."""
    width_n, width_d, height_n, height_d = _unpack(">iIiI", data, box.start, box.end)
    if width_d == 0 or height_d == 0 or width_n <= 0 or height_n <= 0:
        raise CorruptImage("the HEIF/AVIF clean aperture is invalid")
    return (
        max(1, min(size[0], round(width_n / width_d))),
        max(1, min(size[1], round(height_n / height_d))),
    )


def _is_grey(data: bytes, properties: list[_Box], index: int) -> bool:
    box = _property(properties, index)
    return box is not None and box.kind == b"pixi" and data[box.start + 4 : box.end][:1] == b"\x01"


def _is_alpha(data: bytes, properties: list[_Box], index: int) -> bool:
    box = _property(properties, index)
    if box is None or box.kind != b"auxC":
        return False
    urn = data[box.start + 4 : box.end].split(b"\0", 1)[0]
    return urn in _ALPHA_URNS


def _has_alpha_plane(data: bytes, iref: _Box, primary: int, alpha_items: set[int]) -> bool:
    """True when an alpha item refers to the primary item with an ``auxl`` reference."""
    if not alpha_items:
        return False
    version = _unpack(">B", data, iref.start, iref.end)[0]
    id_format = ">I" if version else ">H"
    id_size = struct.calcsize(id_format)
    total = 0
    for ref in _children(data, iref.start + 4, iref.end):
        if ref.kind != b"auxl":
            continue
        (from_item,) = _unpack(id_format, data, ref.start, ref.end)
        (count,) = _unpack(">H", data, ref.start + id_size, ref.end)
        total += 1 + count
        if total > MAX_REFERENCES:
            raise CorruptImage("too many HEIF/AVIF item references")
        offset = ref.start + id_size + 2
        targets = [_unpack(id_format, data, offset + i * id_size, ref.end)[0] for i in range(count)]
        if from_item in alpha_items and primary in targets:
            return True
    return False
