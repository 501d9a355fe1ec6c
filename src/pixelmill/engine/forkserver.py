"""The fork server worker processes start from: preloaded once, started as early as possible.

``max_tasks_per_child`` rules out the ``fork`` start method (Python 3.11 refuses it), and
``spawn`` would re-import Pillow and the core for every recycled worker. A fork server that
has preloaded them (``worker_preload``) forks a new worker in milliseconds. Starting it
first thing lets it do its imports on another core while the command line is still
importing its own.

The server listens on a Unix socket in a folder multiprocessing makes under the temp
folder; a socket's path may not pass 107 bytes, so under a long ``TMPDIR`` that folder is
made in ``/tmp`` instead (private, and removed at exit like the default one).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
from multiprocessing import forkserver, util
from multiprocessing.context import BaseContext

PRELOAD = ["pixelmill.engine.worker_preload"]

SOCKET_PATH_LIMIT = 107  # bytes in sockaddr_un.sun_path, less the final NUL (Linux)
# What multiprocessing adds to the temp folder: "/pymp-XXXXXXXX/listener-XXXXXXXX".
_SOCKET_PATH_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
SHORT_TEMP_ROOT = "/tmp"

_socket_folder_lock = threading.Lock()


def worker_context() -> BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    _settle_socket_folder()
    return context


def start_early() -> None:
    """Launch the fork server now (it preloads in the background); safe to call twice."""
    worker_context()
    forkserver.ensure_running()


def socket_folder_root(temp_dir: str) -> str | None:
    """Where the server's socket folder goes instead of ``temp_dir``, or None to keep it:
    ``/tmp`` when a socket under ``temp_dir`` would pass the path limit."""
    if len(os.fsencode(temp_dir)) + _SOCKET_PATH_SUFFIX <= SOCKET_PATH_LIMIT:
        return None
    return SHORT_TEMP_ROOT


def _settle_socket_folder() -> None:
    """Make multiprocessing's temp folder (it holds the server's socket) in a short place.

    ``util.get_temp_dir`` makes it once per process, under ``tempfile.gettempdir()``, and
    removes it at exit; pointing ``tempfile`` elsewhere for that one call is all it takes.
    """
    with _socket_folder_lock:
        root = socket_folder_root(tempfile.gettempdir())
        if root is None:
            return
        saved = tempfile.tempdir
        tempfile.tempdir = root
        try:
            util.get_temp_dir()
        finally:
            tempfile.tempdir = saved
