"""Worker task functions that fail for real (importable by worker processes)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from pixelmill.engine.task import RenderTask, TaskResult, run_render_task


def faulty_task(task: RenderTask) -> TaskResult:
    """Behaves by the source's name: crash, crash once, hang, hold the GIL, else render."""
    name = Path(task.source).name
    if name.startswith("crash-always"):
        _leave_temp_file(task)
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("crash-once"):
        marker = Path(task.source).with_suffix(".crashed")
        if not marker.exists():
            marker.touch()
            os._exit(3)
    if name.startswith("hang"):
        _leave_temp_file(task)
        time.sleep(3600)
    if name.startswith("gil"):
        # Catastrophic backtracking runs in C holding the GIL: the worker's own watchdog
        # thread never runs, so only the parent's backstop can end it.
        re.match(r"(a+)+$", "a" * 40 + "b")
    return run_render_task(task)


def _leave_temp_file(task: RenderTask) -> None:
    folder = Path(task.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".pixelmill-tmp-half-written").write_bytes(b"\xff\xd8\xff" + b"\0" * 1000)


def pid_recording_task(task: RenderTask) -> TaskResult:
    """Render, and leave the worker's process id beside the source."""
    Path(task.source).with_suffix(".pid").write_text(str(os.getpid()))
    return run_render_task(task)
