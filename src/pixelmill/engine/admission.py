"""The queue of jobs waiting for a worker, and whose turn it is.

Batches take turns (the batch served least recently goes first, a new batch before any
served one), so an image posted alone starts as soon as a worker frees up even while a big
batch keeps the queue full. Within a batch the costliest image goes first, so a big image
met late does not leave one worker idle at the end of a run.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pixelmill.core.crop import decode_side
from pixelmill.core.source import estimate_decode_bytes, probe
from pixelmill.core.specs import RenderSpec
from pixelmill.engine.base import ImageJob


def decode_cost(source: str, spec: RenderSpec) -> int:
    """Estimated peak bytes of decoding ``source`` for ``spec``, from its header; a cover
    crop may decode more than the largest box, and is estimated for what it keeps."""
    largest_box = max(max(p.width, p.height) for p in spec.presets)
    found = probe(source, spec.limits, largest_box)
    side = decode_side(found.width, found.height, spec.presets)
    if side <= largest_box:
        return found.decode_bytes
    return estimate_decode_bytes(found.width, found.height, found.mode, found.format, side)


# A render on several threads holds more at once (each band's rows, encodes beside the next
# resize): with n threads it is estimated at (1 + n/4) times its decode cost, 1.5 times on
# two, and gets only as many threads as that fits in the memory budget. (It is not charged
# for them afterwards: an image arriving meanwhile is admitted as before.)
SPREAD_MEMORY_PER_THREAD = 0.25


def spread_cost(cost: int, threads: int) -> int:
    """The estimated peak of a render of decode cost ``cost`` on ``threads`` threads."""
    return cost if threads <= 1 else int(cost * (1 + SPREAD_MEMORY_PER_THREAD * threads))


def cores_for(*, workers: int, lent: int, queued: int, in_use: int, cost: int, budget: int) -> int:
    """The cores a job starting now may use: its own, plus those no running job holds
    (``lent``: the threads running jobs were given) when nothing waits behind it, as many
    as its memory budget allows for the extra a spread render holds. Under load: one."""
    if queued:
        return 1
    spare = min(workers, _usable_cpus()) - lent
    while spare > 1 and in_use + spread_cost(cost, spare) > budget:
        spare -= 1
    return max(1, spare)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(eq=False)  # compared by identity: the queue removes this very entry
class Entry:
    """A submitted job while the engine holds it."""

    job: ImageJob
    queued_at: float = field(default_factory=time.monotonic)
    strikes: int = 0  # times its worker died under it (not for a timeout or a cancel)
    cost: int | None = None  # estimated decode bytes, from the header; None until looked at


class AdmissionQueue:
    """Queued entries by batch, with each batch's turn. Not thread-safe: the engine locks."""

    def __init__(self) -> None:
        self._batches: dict[str, deque[Entry]] = {}
        self._last_turn: dict[str, int] = {}  # absent: never served (goes first)
        self._turns = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, entry: Entry) -> None:
        self._batches.setdefault(entry.job.batch_id, deque()).append(entry)
        self._size += 1

    def push_front(self, entry: Entry) -> None:
        """Back to the head of its batch (a job retried after its worker died)."""
        self._batches.setdefault(entry.job.batch_id, deque()).appendleft(entry)
        self._size += 1

    def remove(self, entry: Entry) -> bool:
        """Take ``entry`` out; False if it was not queued."""
        batch = entry.job.batch_id
        entries = self._batches.get(batch)
        if entries is None:
            return False
        try:
            entries.remove(entry)
        except ValueError:
            return False
        self._size -= 1
        if not entries:
            del self._batches[batch]
            self._last_turn.pop(batch, None)  # nothing queued: forget it (bounded memory)
        return True

    def take(self, entry: Entry) -> bool:
        """Take ``entry`` out to start it: its batch has had its turn."""
        batch = entry.job.batch_id
        if not self.remove(entry):
            return False
        if batch in self._batches:
            self._turns += 1
            self._last_turn[batch] = self._turns
        return True

    def remove_where(self, doomed: Callable[[ImageJob], bool]) -> list[Entry]:
        """Take out and return every entry whose job ``doomed`` picks (a cancelled batch)."""
        removed = [e for entries in self._batches.values() for e in entries if doomed(e.job)]
        for entry in removed:
            self.remove(entry)
        return removed

    def clear(self) -> list[Entry]:
        """Take out and return everything, oldest batch first."""
        everything = [e for entries in self._batches.values() for e in entries]
        self._batches.clear()
        self._last_turn.clear()
        self._size = 0
        return everything

    def batches_in_turn(self) -> list[str]:
        """Batch ids with queued entries, the one whose turn it is first."""
        order = {batch: i for i, batch in enumerate(self._batches)}
        return sorted(self._batches, key=lambda b: (self._last_turn.get(b, -1), order[b]))

    def window(self, batch_id: str) -> list[Entry]:
        """The queued entries of one batch, oldest first."""
        return list(self._batches.get(batch_id, ()))
