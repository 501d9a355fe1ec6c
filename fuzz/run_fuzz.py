"""``make fuzz``: a bounded coverage-guided run of fuzz/fuzz_images.py, seeded from the corpus.

Prints the executions run and the findings (their inputs kept under ``fuzz-findings/``,
or ``$PIXELMILL_FUZZ_FINDINGS``); exits 1 if there is any. ``FUZZ_SECONDS`` (default 600)
bounds the run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORPUS = REPO.parent / "shared" / "corpus"
sys.path.insert(0, str(HERE))

from harness import seed_files  # noqa: E402


def main() -> int:
    seconds = int(os.environ.get("FUZZ_SECONDS", "600"))
    corpus = Path(os.environ.get("PIXELMILL_CORPUS", CORPUS))
    kept = Path(os.environ.get("PIXELMILL_FUZZ_FINDINGS", REPO / "fuzz-findings"))
    if not (corpus / "manifest.csv").is_file():
        print(f"no image corpus at {corpus} (set PIXELMILL_CORPUS)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pixelmill-fuzz-"))
    try:
        seeds, grown = work / "seeds", work / "grown"
        seeds.mkdir()
        grown.mkdir()
        chosen = seed_files(corpus, max_bytes=64 * 1024, per_format=40)
        for index, path in enumerate(chosen):
            shutil.copyfile(path, seeds / f"{index:04d}{path.suffix.lower()}")
        findings = work / "findings"
        findings.mkdir()
        command = [
            sys.executable,
            str(HERE / "fuzz_images.py"),
            str(grown),  # libFuzzer adds the inputs that found new coverage here
            str(seeds),
            f"-max_total_time={seconds}",
            "-timeout=30",  # a case taking longer is a hang: a finding
            "-rss_limit_mb=3072",
            "-max_len=131072",
            "-close_fd_mask=2",  # decoders' complaints on stderr; libFuzzer keeps its own
            "-print_final_stats=1",
            f"-artifact_prefix={findings}/",
        ]
        print(f"fuzzing for {seconds} s from {len(chosen)} corpus seeds ...", flush=True)
        env = dict(os.environ, PIXELMILL_FUZZ_FINDINGS=str(findings))
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        log = done.stdout + done.stderr
        (work / "libfuzzer.log").write_text(log)
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(
            r"Done (\d+) runs", log
        )
        new = sorted(findings.iterdir())
        print(f"executions: {runs[-1] if runs else 'unknown'}")
        print(f"coverage-increasing inputs kept: {len(list(grown.iterdir()))}")
        print(f"findings: {len([p for p in new if p.suffix != '.txt'])}")
        for path in new:
            if path.suffix == ".txt":
                print(f"  {path.name}: {path.read_text().strip()}")
            elif not path.with_suffix(".txt").exists():
                print(f"  {path.name}: libFuzzer artifact (crash, timeout or out of memory)")
        if new:
            kept.mkdir(parents=True, exist_ok=True)
            for path in new:
                shutil.copyfile(path, kept / path.name)
            print(f"inputs and descriptions kept in {kept}")
        if done.returncode != 0 and not new:
            print(log[-3000:], file=sys.stderr)
            return 1
        return 1 if new else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
