"""The fork server worker processes start from: preloaded once, started as early as possible.

``max_tasks_per_child`` rules out the ``fork`` start method (Python 3.11 refuses it), and
``spawn`` would re-import Pillow and the core for every recycled worker. A fork server that
has preloaded them (``worker_preload``) forks a new worker in milliseconds. Starting it
first thing lets it do its imports on another core while the command line is still
importing its own. ``start_early`` forks it from the command itself, while that is still
one thread, rather than have multiprocessing start a new interpreter: the server then
needs neither an interpreter's start nor multiprocessing's imports, which were most of
the wait for the first worker of a short run.

The server listens on a Unix socket in a folder multiprocessing makes under the temp
folder; a socket's path may not pass 107 bytes, so under a long ``TMPDIR`` that folder is
made in ``/tmp`` instead (private, and removed at exit like the default one), or in
``/var/tmp`` or ``/dev/shm`` where ``/tmp`` cannot take it (read-only, full, missing).
Where none can, ``NoSocketFolder`` says so in one line.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import tempfile
import threading
from multiprocessing import connection, forkserver, resource_tracker, util
from multiprocessing.context import BaseContext
from typing import Any, NoReturn

PRELOAD = ["pixelmill.engine.worker_preload"]

SOCKET_PATH_LIMIT = 107  # bytes in sockaddr_un.sun_path, less the final NUL (Linux)
# What multiprocessing adds to the temp folder: "/pymp-XXXXXXXX/listener-XXXXXXXX".
_SOCKET_PATH_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
MAX_TEMP_DIR_BYTES = SOCKET_PATH_LIMIT - _SOCKET_PATH_SUFFIX  # 75
SHORT_TEMP_ROOTS = ("/tmp", "/var/tmp", "/dev/shm")  # tried in turn under a long TMPDIR

_socket_folder_lock = threading.Lock()


class NoSocketFolder(RuntimeError):
    """No folder can hold the fork server's socket: no worker process can start."""


def worker_context() -> BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    _settle_socket_folder()
    return context


def start_early() -> None:
    """Launch the fork server now (it preloads in the background); safe to call twice.

    Call it while this process has a single thread (a fork copies only the caller's).
    Without a folder for its socket it starts nothing: the run says why after checking
    its command line.
    """
    try:
        worker_context()
    except NoSocketFolder:
        return
    if not _fork_the_server():
        forkserver.ensure_running()


# What ``ForkServer.ensure_running`` keeps (Python 3.11, 3.12): another layout (3.13's
# authentication key, say) and the server is started the standard way.
_SERVER_STATE = ("_lock", "_preload_modules", "_forkserver_address", "_forkserver_alive_fd")
_NEWER_STATE = ("_forkserver_authkey",)


def _fork_the_server() -> bool:
    """Start the fork server as a fork of this process; False where it cannot be done so.

    The same server (``forkserver.main``), set up as ``ensure_running`` sets it up: a
    listening socket, and an "alive" pipe whose end this process keeps, so the server
    exits once this process and its workers are gone.
    """
    server: Any = forkserver._forkserver  # private: the state ensure_running would set
    if (
        not sys.platform.startswith("linux")
        or threading.active_count() != 1
        or not all(hasattr(server, name) for name in _SERVER_STATE)
        or any(hasattr(server, name) for name in _NEWER_STATE)
        or getattr(server, "_forkserver_pid", None) is not None
    ):
        return False
    with server._lock:
        resource_tracker.ensure_running()
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(alive_r)
                os.close(alive_w)
                raise
            if pid == 0:
                _serve(listener.fileno(), alive_r, alive_w, list(server._preload_modules))
            os.close(alive_r)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    return True


def _serve(listener_fd: int, alive_r: int, alive_w: int, preload: list[str]) -> NoReturn:
    """The forked server's whole life: never returns into the command's code."""
    code = 1
    try:
        os.close(alive_w)  # else it would wait for its own end of the pipe to close
        forkserver.main(listener_fd, alive_r, preload)
    except SystemExit as exc:  # how it ends once every client is gone
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        os._exit(code)


def socket_folder_roots(temp_dir: str | None) -> tuple[str, ...]:
    """Where the server's socket folder may go, in order: ``temp_dir`` where a socket under
    it fits the path limit, then the short system folders (``temp_dir`` None: there is no
    usable temp folder)."""
    if temp_dir is not None and len(os.fsencode(temp_dir)) <= MAX_TEMP_DIR_BYTES:
        return (temp_dir, *(root for root in SHORT_TEMP_ROOTS if root != temp_dir))
    return SHORT_TEMP_ROOTS


def _settle_socket_folder() -> None:
    """Make multiprocessing's temp folder (it holds the server's socket) in a short place.

    ``util.get_temp_dir`` makes it once per process, under ``tempfile.gettempdir()``, and
    removes it at exit; pointing ``tempfile`` elsewhere for that one call is all it takes.
    NoSocketFolder if it can be made nowhere (nothing is left behind then).
    """
    with _socket_folder_lock:
        made = multiprocessing.current_process()._config.get("tempdir")  # type: ignore[attr-defined]
        if made:  # made already (by us, or by other multiprocessing use in this process)
            if len(os.fsencode(os.path.dirname(made))) <= MAX_TEMP_DIR_BYTES:
                return
            raise NoSocketFolder(
                f"this process already made its multiprocessing folder {made}, too long for "
                f"a socket path; set TMPDIR to a writable folder of at most "
                f"{MAX_TEMP_DIR_BYTES} bytes"
            )
        try:
            temp_dir: str | None = tempfile.gettempdir()
        except OSError:  # no usable temp folder at all
            temp_dir = None
        failures = []
        saved = tempfile.tempdir
        for root in socket_folder_roots(temp_dir):
            tempfile.tempdir = root
            try:
                util.get_temp_dir()
                return
            except OSError as exc:
                failures.append(f"{root}: {exc.strerror or exc}")
            finally:
                tempfile.tempdir = saved
        raise NoSocketFolder(_no_folder_message(temp_dir, failures))


def _no_folder_message(temp_dir: str | None, failures: list[str]) -> str:
    size = len(os.fsencode(temp_dir)) if temp_dir is not None else 0
    if temp_dir is None:
        why = "there is no usable temp folder; "
    elif size > MAX_TEMP_DIR_BYTES:
        why = (
            f"the temp folder {temp_dir} is too long for a socket path "
            f"({size} bytes, at most {MAX_TEMP_DIR_BYTES}); "
        )
    else:
        why = ""
    return (
        f"cannot make a folder for the worker processes' socket: {why}{'; '.join(failures)}; "
        f"set TMPDIR to a writable folder of at most {MAX_TEMP_DIR_BYTES} bytes"
    )
