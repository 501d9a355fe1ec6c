"""Hostile images: mutants of corpus files through sniff -> header probe -> render.

A bounded, seeded (derandomised) hypothesis run for ``make test``; ``make fuzz`` runs the
same pipeline coverage-guided for longer. Each case runs in a child process with a time
limit, so a crash or a hang fails the test instead of killing or stalling the suite. Only
DESIGN.md's image codes may come out.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from harness import (
    ALLOWED_OUTCOMES,
    MUTATIONS,
    CaseRunner,
    apply_mutations,
    run_pipeline,
    seed_files,
)

# Wall-clock budget of the hypothesis run (it stops drawing cases once spent).
FUZZ_BUDGET_S = 45.0
CASE_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def runner() -> Iterator[CaseRunner]:
    case_runner = CaseRunner(timeout_s=CASE_TIMEOUT_S)
    yield case_runner
    case_runner.close()


@pytest.fixture(scope="module")
def seeds(corpus: Path) -> list[bytes]:
    chosen = seed_files(corpus, per_format=6)
    # HEIF and AVIF too: their headers are read by our own ISOBMFF reader, in the service.
    wanted = {".png", ".jpg", ".gif", ".bmp", ".webp", ".tif", ".heic", ".avif"}
    assert {p.suffix.lower() for p in chosen} >= wanted
    return [p.read_bytes() for p in chosen]


_steps = st.lists(
    st.tuples(
        st.integers(0, len(MUTATIONS) - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
    min_size=1,
    max_size=4,
)


class _Budget:
    started: float | None = None
    cases = 0


@pytest.mark.corpus
@settings(
    max_examples=1500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 10_000),
    donor=st.integers(0, 10_000),
    steps=_steps,
    fix_crcs=st.booleans(),
)
def test_mutants_end_in_a_design_code(
    runner: CaseRunner,
    seeds: list[bytes],
    seed: int,
    donor: int,
    steps: list[tuple[int, int, int]],
    fix_crcs: bool,
) -> None:
    """Bit flips, byte and integer replacements, truncations and splices of corpus files of
    every format: rendered, or a DESIGN.md code; never another error, a crash or a hang."""
    if _Budget.started is None:
        _Budget.started = time.monotonic()
    if time.monotonic() - _Budget.started > FUZZ_BUDGET_S:
        return  # the budget is spent: the remaining draws pass without running
    _Budget.cases += 1
    mutant = apply_mutations(
        seeds[seed % len(seeds)], steps, seeds[donor % len(seeds)], fix_crcs=fix_crcs
    )
    outcome = runner.run(mutant)
    assert outcome in ALLOWED_OUTCOMES, (outcome, seed % len(seeds), steps, fix_crcs)


def test_the_fuzz_ran_cases() -> None:
    """The run above did real work (it is not silently skipped by its budget)."""
    if _Budget.started is None:
        pytest.skip("the fuzz test did not run (no corpus)")
    assert _Budget.cases >= 100


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _palette_png(palette_chunk: bytes) -> bytes:
    rows = b"".join(b"\x00" + bytes([i % 4] * 8) for i in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 3, 0, 0, 0))
        + _png_chunk(palette_chunk, bytes(range(12)))
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def test_palette_image_without_a_palette_is_corrupt(tmp_path: Path) -> None:
    """Found by the fuzz: PLTE renamed by a bit flip (CRC fixed) gave a P image with no
    palette, and Pillow's bare AssertionError came out as `internal`."""
    assert run_pipeline(_palette_png(b"PLTE"), tmp_path) == "rendered"
    assert run_pipeline(_palette_png(b"jLTE"), tmp_path) == "corrupt_image"


def test_a_hang_is_an_outcome_not_a_stuck_suite() -> None:
    """A case that never answers is reported as a hang, its process killed, and the next
    case runs in a fresh process."""
    runner = CaseRunner(timeout_s=1.0)
    try:
        runner._ensure_child()
        stuck = runner._process
        assert stuck is not None and stuck.pid is not None
        os.kill(stuck.pid, signal.SIGSTOP)  # as a decoder looping in C would: no answer
        assert runner.run(b"GIF89a") == "hang"
        assert not stuck.is_alive()
        runner.timeout_s = CASE_TIMEOUT_S
        assert runner.run(b"not an image") == "unsupported_format"
    finally:
        runner.close()
