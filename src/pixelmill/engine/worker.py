"""The worker process's side of the pool: take a task from the pipe, run it, send the result.

One pipe per worker carries, from the engine: a ``RenderTask``, a ``CancelTask`` for the
task it runs, or ``None`` (stop); to the engine: one ``TaskResult`` per task. A worker runs
at most ``max_tasks`` tasks, then exits (the engine starts a fresh one from the fork server).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from pixelmill.engine.task import RenderTask, TaskFunction, TaskResult, set_cancel_check
from pixelmill.errors import ErrorCode

log = logging.getLogger(__name__)

ORPHAN_CHECK_INTERVAL_S = 1.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Exit status of a worker that ran out of time on an image (see _Watchdog).
TIMEOUT_EXIT_STATUS = 86


@dataclass(frozen=True)
class CancelTask:
    """Sent by the engine: stop the task ``job_id`` between renditions."""

    job_id: str


@dataclass(frozen=True)
class TimedOut:
    """Sent by a worker's watchdog just before it ends the worker."""

    job_id: str


class _Watchdog:
    """Ends this worker process if an image outlives its time limit.

    A decoder stuck in C cannot be interrupted from Python; the watchdog tells the engine
    (a message, and the exit status) and exits, so the engine reports ``timeout`` for this
    image only. A worker too stuck to run this thread is killed by the engine's backstop.
    """

    def __init__(self, conn: Connection, task: RenderTask) -> None:
        self._conn = conn
        self._job_id = task.job_id
        self._timer = threading.Timer(task.spec.limits.timeout_s, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        try:
            self._conn.send(TimedOut(self._job_id))
        finally:
            os._exit(TIMEOUT_EXIT_STATUS)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def worker_main(conn: Connection, engine_pid: int, function: TaskFunction, max_tasks: int) -> None:
    """The worker's whole life: run up to ``max_tasks`` tasks from ``conn``, then exit."""
    init_worker(engine_pid)
    done = 0
    while done < max_tasks:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the engine is gone or closed our pipe
            return
        if message is None:
            return
        if not isinstance(message, RenderTask):
            continue  # a cancel that arrived after its task had finished
        result = _run(conn, function, message)
        done += 1
        try:
            _send(conn, result)
        except (OSError, ValueError):  # the engine is gone
            return


def _send(conn: Connection, result: TaskResult) -> None:
    try:
        conn.send(result)
    except (OSError, ValueError):
        raise
    except Exception as exc:  # a result that cannot be pickled (pickling writes nothing)
        message = f"cannot send the result: {type(exc).__name__}: {exc}"
        conn.send(TaskResult(result.job_id, None, ErrorCode.INTERNAL, message))


def _run(conn: Connection, function: TaskFunction, task: RenderTask) -> TaskResult:
    cancelled = False

    def cancel_requested() -> bool:
        nonlocal cancelled
        try:
            while not cancelled and conn.poll():
                message = conn.recv()
                cancelled = isinstance(message, CancelTask) and message.job_id == task.job_id
        except (EOFError, OSError):  # the engine is gone: nobody wants the rest
            cancelled = True
        return cancelled

    set_cancel_check(cancel_requested)
    try:
        with _Watchdog(conn, task):
            result = function(task)
    except Exception as exc:  # a task function that raises is a bug of ours, not a crash
        log.exception("task function raised on %s", task.source)
        result = TaskResult(task.job_id, None, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    finally:
        set_cancel_check(None)
    if not isinstance(result, TaskResult):
        kind = type(result).__name__
        return TaskResult(task.job_id, None, ErrorCode.INTERNAL, f"task returned {kind}")
    return result


def init_worker(engine_pid: int) -> None:
    """Worker start-up: Ctrl-C is the parent's business, and native decoders stay quiet.

    libtiff and friends write complaints about damaged files straight to file descriptor 2;
    the image's outcome already says what went wrong, so a worker's stderr goes nowhere.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _die_with_the_fork_server()
    watcher = threading.Thread(target=_exit_when_gone, args=(engine_pid,), daemon=True)
    watcher.start()


def _die_with_the_fork_server() -> None:
    """Have the kernel SIGKILL this worker when the fork server (its parent) exits.

    The fork server exits once every holder of its "alive" pipe is gone: the engine, and
    (multiprocessing hands it to them) every worker. A worker stuck in native code holding
    the GIL never runs ``_exit_when_gone``, so it kept the fork server, the resource
    tracker and itself alive forever after the engine was killed. Workers start no
    processes: they drop their copy, and die with the fork server (Linux only).
    """
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # private: where multiprocessing keeps the fd
    alive_fd = server._forkserver_alive_fd
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        server._forkserver_alive_fd = None
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the orphan check still guards
        return
    if os.getppid() != parent:  # the fork server went away before prctl took effect
        os._exit(0)


def _exit_when_gone(engine_pid: int) -> None:
    """End this worker once the engine's process is gone, even in the middle of a task.

    An idle worker sees its pipe close; a busy one would finish its image for nobody.
    """
    while True:
        time.sleep(ORPHAN_CHECK_INTERVAL_S)
        try:
            os.kill(engine_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            continue
