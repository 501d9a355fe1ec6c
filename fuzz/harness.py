"""The image pipeline under fuzz: seeds from the corpus, byte mutations, one case's outcome.

Shared by the bounded fuzz in ``make test`` (tests/test_fuzz_images.py) and the long,
coverage-guided run of ``make fuzz`` (fuzz/fuzz_images.py). A case is one file of bytes put
through sniff -> header probe -> render, as the service does it; its outcome must be
rendered or one of DESIGN.md's image error codes. Anything else (another exception, a
crash, a hang) is a finding.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import struct
import tempfile
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

from pixelmill.core import Limits, OutputFormat, Preset, RenderSpec, probe, render_renditions
from pixelmill.core.encode import TEMP_PREFIX
from pixelmill.core.sniff import HEADER_BYTES, sniff
from pixelmill.errors import ImageError

# What a bad image may end as (DESIGN.md); "rendered" when it was good enough to render.
ALLOWED_OUTCOMES = frozenset(
    {"rendered", "unsupported_format", "corrupt_image", "too_many_pixels", "file_too_large"}
)
# Small boxes and a modest pixel limit keep each case fast; the decoders' code paths are the
# same as with the defaults. Every output format runs, so encoders see odd modes too.
FUZZ_SPEC = RenderSpec(
    presets=(Preset("small", 48, 48), Preset("wide", 96, 24)),
    formats=(OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.PNG, OutputFormat.AVIF),
    limits=Limits(max_bytes=4 * 1024 * 1024, max_pixels=4_000_000, timeout_s=20),
)
SHA = "f" * 64
SEED_FOLDERS = ("photos", "pngsuite", "bmpsuite", "corrupt", "exif_orientation")
SEED_EXTENSIONS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".gif": "gif",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
    ".heic": "heif",
    ".avif": "avif",
}


def seed_files(corpus: Path, max_bytes: int = 64 * 1024, per_format: int = 12) -> list[Path]:
    """Up to ``per_format`` of the smallest corpus files of each format (by magic bytes)."""
    by_format: dict[str, list[Path]] = {}
    for folder in SEED_FOLDERS:
        for path in sorted((corpus / folder).rglob("*")):
            if path.suffix.lower() not in SEED_EXTENSIONS or not path.is_file():
                continue
            with open(path, "rb") as f:
                fmt = sniff(f.read(HEADER_BYTES))
            if fmt is not None:
                by_format.setdefault(fmt.value, []).append(path)
    seeds = []
    for paths in by_format.values():
        small = [p for p in paths if p.stat().st_size <= max_bytes]
        pool = small or sorted(paths, key=lambda p: p.stat().st_size)[:1]
        rng = random.Random(len(pool))
        seeds += sorted(rng.sample(pool, min(per_format, len(pool))))
    return seeds


def fix_png_crcs(data: bytes) -> bytes:
    """``data`` with every PNG chunk's CRC recomputed, so a mutant reaches the decoder."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out = bytearray(data[:8])
    offset = 8
    while offset + 8 <= len(data):
        length = struct.unpack_from(">I", data, offset)[0]
        end = offset + 8 + length
        if end + 4 > len(data):
            out += data[offset:]
            return bytes(out)
        chunk = data[offset + 4 : end]
        out += data[offset:end] + struct.pack(">I", zlib.crc32(chunk))
        offset = end + 4
    out += data[offset:]
    return bytes(out)


def _bit_flip(data: bytearray, at: int, value: int, _: bytes) -> None:
    data[at % len(data)] ^= 1 << (value % 8)


def _byte_replace(data: bytearray, at: int, value: int, _: bytes) -> None:
    data[at % len(data)] = (0x00, 0xFF, 0x7F, 0x80, 0x01, value % 256)[value % 6]


_INTERESTING = (0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, 255, 256, 0x80000000)


def _int_replace(data: bytearray, at: int, value: int, _: bytes) -> None:
    """An interesting 16/32-bit value where sizes, lengths and offsets live."""
    width = 2 if value & 1 else 4
    if len(data) < width:
        return
    number = _INTERESTING[(value >> 2) % len(_INTERESTING)] & ((1 << (8 * width)) - 1)
    position = at % (len(data) - width + 1)
    data[position : position + width] = number.to_bytes(width, "big" if value & 2 else "little")


def _truncate(data: bytearray, at: int, _: int, __: bytes) -> None:
    del data[max(1, at % len(data)) :]


def _splice(data: bytearray, at: int, value: int, donor: bytes) -> None:
    """Insert or overwrite with a slice of another seed (or of itself)."""
    source = donor or bytes(data)
    start = value % len(source)
    piece = source[start : start + 1 + (value >> 8) % 256]
    position = at % len(data)
    if value & 1:
        data[position:position] = piece
    else:
        data[position : position + len(piece)] = piece


def _duplicate_range(data: bytearray, at: int, value: int, _: bytes) -> None:
    position = at % len(data)
    data[position:position] = data[position : position + 1 + value % 512]


MUTATIONS: tuple[Callable[[bytearray, int, int, bytes], None], ...] = (
    _bit_flip,
    _byte_replace,
    _int_replace,
    _truncate,
    _splice,
    _duplicate_range,
)


def apply_mutations(
    data: bytes, steps: list[tuple[int, int, int]], donor: bytes = b"", fix_crcs: bool = False
) -> bytes:
    """``data`` with each (mutation, position, value) step applied; deterministic."""
    mutant = bytearray(data)
    for kind, at, value in steps:
        if mutant:
            MUTATIONS[kind % len(MUTATIONS)](mutant, at, value, donor)
    return fix_png_crcs(bytes(mutant)) if fix_crcs else bytes(mutant)


def mutate(data: bytes, rng: random.Random, donor: bytes = b"") -> bytes:
    """1..4 random mutations; PNG mutants get their CRCs fixed half of the time."""
    steps = [
        (rng.randrange(len(MUTATIONS)), rng.randrange(1 << 32), rng.randrange(1 << 32))
        for _ in range(rng.randint(1, 4))
    ]
    return apply_mutations(data, steps, donor, fix_crcs=rng.random() < 0.5)


def run_pipeline(data: bytes, folder: Path) -> str:
    """Put ``data`` through sniff -> probe -> render in ``folder``; the outcome as a code.

    An exception other than ImageError propagates: that is a finding.
    """
    source = folder / "source"
    out = folder / "out"
    source.write_bytes(data)
    try:
        probe(source, FUZZ_SPEC.limits, 96)
        render_renditions(source, out, FUZZ_SPEC, SHA)
        outcome = "rendered"
    except ImageError as exc:
        outcome = exc.code.value
    left = [p.name for p in out.glob(f"{TEMP_PREFIX}*")] if out.exists() else []
    if left:
        raise AssertionError(f"temp files left behind: {left}")
    return outcome


def _serve(connection: multiprocessing.connection.Connection) -> None:
    """Child process: run each case it is sent; answer its outcome or the finding."""
    # libtiff and friends complain about damaged data straight to fd 2; outcomes say enough.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    folder = Path(tempfile.mkdtemp(prefix="pixelmill-fuzz-"))
    try:
        while True:
            try:
                data = connection.recv_bytes()
            except EOFError:
                return
            case = folder / "case"
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir()
            try:
                outcome = run_pipeline(data, case)
            except Exception as exc:  # the finding, with where it came from
                frames = traceback.extract_tb(exc.__traceback__)[-3:]
                where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[::-1])
                outcome = f"finding {type(exc).__name__}: {str(exc)[:160]} at {where}"
            connection.send(outcome)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class CaseRunner:
    """Runs cases in a child process, so a crash or a hang is an outcome, not a lost run."""

    def __init__(self, timeout_s: float = 20.0) -> None:
        self.timeout_s = timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: multiprocessing.connection.Connection | None = None

    def run(self, data: bytes) -> str:
        """The outcome of one case: a code, "rendered", "finding ...", "crash ..." or "hang"."""
        connection = self._ensure_child()
        connection.send_bytes(data)
        try:
            ready = connection.poll(self.timeout_s)
            if ready:
                answer: str = connection.recv()
                return answer
        except (EOFError, OSError):
            pass
        exit_code = self._stop()
        return "hang" if exit_code is None else f"crash (exit status {exit_code})"

    def _ensure_child(self) -> multiprocessing.connection.Connection:
        if self._process is None or not self._process.is_alive() or self._connection is None:
            self._stop()
            parent, child = self._context.Pipe()
            self._process = self._context.Process(target=_serve, args=(child,), daemon=True)
            self._process.start()
            child.close()
            self._connection = parent
        return self._connection

    def _stop(self) -> int | None:
        """End the child; its exit status, or None if it had to be killed (a hang)."""
        process, self._process = self._process, None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if process is None:
            return None
        process.join(0.5)
        status = process.exitcode
        if status is None:
            process.kill()
            process.join(5)
        return status

    def close(self) -> None:
        self._stop()
