"""Coverage-guided fuzz (atheris/libFuzzer) of sniff -> header probe -> render.

Run by ``fuzz/run_fuzz.py`` (``make fuzz``), which seeds it from the corpus, bounds it with
``-max_total_time`` and reports executions and findings. A case that ends in anything but a
rendered image or one of DESIGN.md's image codes is saved under ``$PIXELMILL_FUZZ_FINDINGS``
(input bytes + a one-line description) and the run goes on; a native crash stops libFuzzer,
which saves the input itself (``-artifact_prefix``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pixelmill", "PIL"]):
    from harness import ALLOWED_OUTCOMES, run_pipeline

FINDINGS = Path(os.environ.get("PIXELMILL_FUZZ_FINDINGS", "fuzz-findings"))
_WORK = Path(tempfile.mkdtemp(prefix="pixelmill-atheris-"))


def test_one_input(data: bytes) -> None:
    """One libFuzzer execution: the pipeline on ``data``; a finding is saved, not raised."""
    case = _WORK / "case"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    try:
        outcome = run_pipeline(data, case)
        problem = None if outcome in ALLOWED_OUTCOMES else f"outcome {outcome}"
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        problem = f"{type(exc).__name__}: {exc} at {Path(frame.filename).name}:{frame.lineno}"
    if problem is not None:
        name = hashlib.sha1(data).hexdigest()[:16]
        FINDINGS.mkdir(parents=True, exist_ok=True)
        (FINDINGS / f"{name}.bin").write_bytes(data)
        (FINDINGS / f"{name}.txt").write_text(problem[:2000] + "\n")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        shutil.rmtree(_WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
