"""Worker task functions that fail for real (importable by worker processes)."""

from __future__ import annotations

import os
import re
import signal
import struct
import time
from pathlib import Path

from pixelmill.core.encode import TEMP_PREFIX
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
    folder = task.storage.local_dir(task.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".pixelmill-tmp-half-written").write_bytes(b"\xff\xd8\xff" + b"\0" * 1000)


def pid_recording_task(task: RenderTask) -> TaskResult:
    """Render, and leave the worker's process id beside the source."""
    Path(task.source).with_suffix(".pid").write_text(str(os.getpid()))
    return run_render_task(task)


def counting_task(task: RenderTask) -> TaskResult:
    """``faulty_task``, after adding a line to ``<source>.starts`` for each start.

    ``slow*`` images take a second before rendering, so they are in flight when another
    worker crashes or times out.
    """
    with Path(task.source).with_suffix(".starts").open("a") as starts:
        starts.write(f"{os.getpid()}\n")
    if Path(task.source).name.startswith("slow"):
        time.sleep(1.0)
    return faulty_task(task)


def crash_after_render_task(task: RenderTask) -> TaskResult:
    """Write every rendition (no manifest yet), then die: the parent must clean up."""
    from pixelmill.core.render import render_renditions

    render_renditions(
        task.source, task.storage.local_dir(task.sha256), task.spec, task.sha256, only=task.only
    )
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def crash_after_manifest_task(task: RenderTask) -> TaskResult:
    """Render and write the manifest, then die before sending the result (the first time)."""
    result = run_render_task(task)
    marker = Path(task.source).with_suffix(".crashed")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def cancel_midway_task(task: RenderTask) -> TaskResult:
    """Render until the first rendition is written, then wait (bounded) for the engine's cancel.

    ``<source>.midway`` appears once a rendition is on disk: the test cancels then.
    """
    from pixelmill.engine import task as task_module

    engine_says_stop = task_module._cancel_check
    checks = 0
    folder = task.storage.local_dir(task.sha256)

    def stop_after_first_rendition() -> bool:
        nonlocal checks
        checks += 1
        if checks < 3:  # before it starts, and before the first rendition
            return engine_says_stop()
        # On several cores the first rendition may still be encoding on a helper thread.
        deadline = time.monotonic() + 20
        while not _has_rendition(folder) and time.monotonic() < deadline:
            time.sleep(0.01)
        Path(task.source).with_suffix(".midway").touch()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if engine_says_stop():
                return True
            time.sleep(0.02)
        return False

    task_module.set_cancel_check(stop_after_first_rendition)
    return run_render_task(task)


def _has_rendition(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix != ".json" and not p.name.startswith(TEMP_PREFIX) for p in folder.iterdir()
    )


def torn_result_task(task: RenderTask) -> TaskResult:
    """The first time: render, write half a message on the worker's pipe, then die."""
    from multiprocessing.connection import Connection

    from pixelmill.engine import task as task_module

    result = run_render_task(task)
    marker = Path(task.source).with_suffix(".torn")
    if marker.exists():
        return result
    marker.touch()
    cells = task_module._cancel_check.__closure__ or ()
    conn = next(c.cell_contents for c in cells if isinstance(c.cell_contents, Connection))
    conn._send(struct.pack("!i", 4096) + b"half a result")  # the header promises 4096 bytes
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def threads_recording_task(task: RenderTask) -> TaskResult:
    """Leave the cores the engine gave the task beside the source (``slow*`` images take
    half a second first, so others are queued or running meanwhile), then render."""
    Path(task.source).with_suffix(".threads").write_text(str(task.threads))
    if Path(task.source).name.startswith("slow"):
        time.sleep(0.5)
    return run_render_task(task)
