"""Review of the local engine: orphans after the engine is killed, a second Ctrl-C, a copy
whose batch is cancelled while its leader renders."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_engine import make_photo
from test_engine_faults import starts_of

TESTS = Path(__file__).parent

ENGINE_OWNER = """
import hashlib, sys, time
from pathlib import Path
from pixelmill.core.specs import Limits, OutputFormat, RenderSpec
from pixelmill.engine.base import ImageJob
from pixelmill.engine.local import LocalEngine
from pixelmill.storage import LocalStorage
from engine_faults import counting_task

if __name__ == "__main__":
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    spec = RenderSpec(formats=(OutputFormat.JPEG,), limits=Limits(timeout_s=600))
    engine = LocalEngine(spec, LocalStorage(out), workers=2, memory_budget_bytes=640 << 20,
                         max_tasks_per_child=50, on_outcome=print,
                         task_function=counting_task).start()
    for name in ("gil.jpg", "hang.jpg"):
        photo = folder / name
        sha = hashlib.sha256(photo.read_bytes()).hexdigest()
        engine.submit(ImageJob(name, str(photo), sha))
    time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


def test_a_worker_stuck_holding_the_gil_dies_with_the_engine(tmp_path: Path) -> None:
    """SIGKILL of the engine's process ends every worker, even one that never runs Python
    again (native code holding the GIL), and with it the fork server and resource tracker."""
    psutil = pytest.importorskip("psutil")
    for name, seed in (("gil.jpg", 1), ("hang.jpg", 2)):
        make_photo(tmp_path / name, seed=seed)
    script = tmp_path / "engine_owner.py"
    script.write_text(ENGINE_OWNER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out"), str(tmp_path)], env=_env()
    )
    tree = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if starts_of(tmp_path / "gil.jpg") and starts_of(tmp_path / "hang.jpg"):
                break
            time.sleep(0.05)
        assert starts_of(tmp_path / "gil.jpg"), "the stuck image never started"
        time.sleep(0.3)  # the regex is running now
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 3, "expected a fork server and two workers"
    finally:
        proc.kill()
        proc.wait(10)
    killed = time.monotonic()
    _, alive = psutil.wait_procs(tree, timeout=15)
    took = time.monotonic() - killed
    for leftover in alive:
        leftover.kill()
    assert not alive, f"left running: {[p.cmdline()[-1][:60] for p in alive]}"
    print(f"every process of the engine gone {took:.2f} s after its SIGKILL")
