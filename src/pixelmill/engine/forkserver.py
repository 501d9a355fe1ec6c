"""The fork server worker processes start from: preloaded once, started as early as possible.

``max_tasks_per_child`` rules out the ``fork`` start method (Python 3.11 refuses it), and
``spawn`` would re-import Pillow and the core for every recycled worker. A fork server that
has preloaded them forks a new worker in milliseconds. Starting it first thing lets it do
its imports on another core while the command line is still importing its own.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

PRELOAD = ["pixelmill.engine.worker"]


def worker_context() -> BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_early() -> None:
    """Launch the fork server now (it preloads in the background); safe to call twice."""
    worker_context()
    forkserver.ensure_running()
