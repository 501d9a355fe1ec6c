"""Which batches are cancelled: kept while the engine holds jobs of them, then forgotten.

Cancel signals need no files: a worker learns that its task was cancelled from a message
on its pipe (see ``worker.py``). A cancelled batch id stays while any job of that batch is
queued or running, then moves to a short, bounded memory of recent cancels, so that an
image of the batch still on its way to ``submit`` (a resume, a slow feeder) is cancelled
too, and a long-running service does not keep every id it ever cancelled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter, OrderedDict
from pathlib import Path

RECENT_CANCELS_KEPT = 1024


class CancelRegistry:
    """Cancelled batch ids and jobs held per batch. Not thread-safe: the engine locks."""

    def __init__(self, recent_kept: int = RECENT_CANCELS_KEPT) -> None:
        self.everything = False  # cancel_all (Ctrl-C, shutdown with cancel_pending)
        self._held: Counter[str] = Counter()  # jobs submitted and not yet reported, by batch
        self._active: set[str] = set()  # cancelled batches with jobs held
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_kept = recent_kept

    def cancel(self, batch_id: str) -> None:
        if self._held[batch_id]:
            self._active.add(batch_id)
        else:
            self._remember(batch_id)

    def cancel_all(self) -> None:
        self.everything = True

    def is_cancelled(self, batch_id: str) -> bool:
        return self.everything or batch_id in self._active or batch_id in self._recent

    def job_added(self, batch_id: str) -> None:
        self._held[batch_id] += 1
        if batch_id in self._recent:  # cancelled a moment ago: still cancelled
            del self._recent[batch_id]
            self._active.add(batch_id)

    def job_reported(self, batch_id: str) -> None:
        self._held[batch_id] -= 1
        if self._held[batch_id] <= 0:
            del self._held[batch_id]
            if batch_id in self._active:
                self._active.discard(batch_id)
                self._remember(batch_id)

    def size(self) -> int:
        """How many batch ids are kept (bounded by the jobs held plus the recent memory)."""
        return len(self._active) + len(self._recent) + len(self._held)

    def _remember(self, batch_id: str) -> None:
        self._recent[batch_id] = None
        self._recent.move_to_end(batch_id)
        while len(self._recent) > self._recent_kept:
            self._recent.popitem(last=False)


def remove_orphaned_flag_folders(work_dir: Path) -> None:
    """Remove the cancel-flag folders (``engine-<pid>-*``) earlier versions left behind.

    Only those of processes that are gone: another engine of an earlier version may
    still be using its own.
    """
    with contextlib.suppress(OSError):
        for folder in work_dir.glob("engine-*-*"):
            try:
                os.kill(int(folder.name.split("-")[1]), 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
            except (ValueError, PermissionError):
                continue  # not ours to judge: a name we did not write, or another user's
