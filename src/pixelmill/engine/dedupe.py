"""De-duplication of work in flight: one render per content at a time, copies wait for it.

Content rendered before is found on disk (its manifest); content being rendered right now
is found here, and a copy waits for that render's outcome instead of rendering it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pixelmill.engine.admission import Entry
from pixelmill.engine.base import ImageJob

Leader = TypeVar("Leader")


class InFlight(Generic[Leader]):
    """The render of each SHA-256 in flight, and the copies waiting for it."""

    def __init__(self) -> None:
        self._leaders: dict[str, Leader] = {}
        self._followers: dict[str, list[Entry]] = {}

    def is_rendering(self, sha256: str) -> bool:
        return sha256 in self._leaders

    def claim(self, sha256: str, leader: Leader) -> None:
        self._leaders[sha256] = leader

    def release(self, sha256: str, leader: Leader) -> None:
        """``leader`` finished (its followers stay until ``followers_of`` takes them)."""
        if self._leaders.get(sha256) is leader:
            del self._leaders[sha256]

    def wait_for(self, sha256: str, entry: Entry) -> None:
        """``entry`` is a copy of content in flight: it gets that render's outcome."""
        self._followers.setdefault(sha256, []).append(entry)

    def followers_of(self, sha256: str) -> list[Entry]:
        """Take the copies waiting for ``sha256``."""
        return self._followers.pop(sha256, [])

    def remove_followers_where(self, doomed: Callable[[ImageJob], bool]) -> list[Entry]:
        """Take out and return the copies whose job ``doomed`` picks (a cancelled batch)."""
        removed: list[Entry] = []
        for sha256 in list(self._followers):
            kept: list[Entry] = []
            for entry in self._followers[sha256]:
                (removed if doomed(entry.job) else kept).append(entry)
            if kept:
                self._followers[sha256] = kept
            else:
                del self._followers[sha256]
        return removed

    def take_all_followers(self) -> list[Entry]:
        everyone = [entry for entries in self._followers.values() for entry in entries]
        self._followers.clear()
        return everyone
