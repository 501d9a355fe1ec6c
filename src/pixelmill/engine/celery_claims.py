"""Content claims of the distributed workers: one process renders a given sha256 at a time.

A claim is a store key holding ``image:machine:pid:nonce`` (one per delivery, so a duplicated
message cannot share it) that expires unless its heartbeat refreshes it. A process that dies
lets it expire; on its own machine the next delivery sees the pid is gone and takes it over.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from pathlib import Path

from pixelmill.store.base import WorkCoordination

CLAIM_TTL_S = 15.0
CLAIM_REFRESH_S = 3.0


class ClaimHeartbeat:
    """Keeps a content claim alive while its render runs (it expires if this process dies)."""

    def __init__(self, store: WorkCoordination, sha256: str, owner: str) -> None:
        self._store, self._sha256, self._owner = store, sha256, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixelmill-claim", daemon=True)

    def __enter__(self) -> ClaimHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._store.release_claim(self._sha256, self._owner)

    def _run(self) -> None:
        while not self._stop.wait(CLAIM_REFRESH_S):
            with contextlib.suppress(Exception):  # a blip: the next beat tries again
                self._store.refresh_claim(self._sha256, self._owner, CLAIM_TTL_S)


def claim_owner(image_id: str) -> str:
    """``image:machine:pid:nonce``: unique per delivery, and says which process holds it."""
    return f"{image_id}:{MACHINE_ID}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def take_claim(store: WorkCoordination, sha256: str, owner: str) -> bool:
    """Claim ``sha256``; a claim left by a dead process of this machine is taken over (a
    pool process killed mid-render: its redelivery need not wait for the claim to expire)."""
    if store.claim_content(sha256, owner, CLAIM_TTL_S):
        return True
    holder = store.claim_holder(sha256)
    parts = (holder or "").split(":")
    if len(parts) != 4 or parts[1] != MACHINE_ID or not parts[2].isdigit():
        return False
    if _process_alive(int(parts[2])):
        return False
    store.release_claim(sha256, holder or "")  # compare and delete: only that holder's
    return bool(store.claim_content(sha256, owner, CLAIM_TTL_S))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _machine_id() -> str:
    """This boot of this machine and its host name: the processes whose pids ``os.kill``
    can check (containers on one machine share the boot, not the host name or the pids)."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    return f"{boot}@{socket.gethostname()}".replace(":", "_")


MACHINE_ID = _machine_id()
