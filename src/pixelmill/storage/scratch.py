"""Scratch folders of the S3 sibling: ``<data>/tmp/s3/<sha>-<pid>-<thread>-<token>``, one per
render.

A render writes its renditions and manifest there before uploading them. The name says whose
it is, so a clean-up removes only folders no render uses any more (its own, or those of
threads and processes that are gone), and an object in the bucket can name the folder it
was uploaded from (its writer).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
from pathlib import Path

_token = ("", 0)  # (this process's token, the pid it was made for)


def process_token() -> str:
    """Random per process (a fork gets its own): tells this process from an earlier one that
    had the same pid (a restarted container's service often gets the pid of the last one)."""
    global _token
    if _token[1] != os.getpid():
        _token = (secrets.token_hex(4), os.getpid())
    return _token[0]


def scratch_name(sha256: str) -> str:
    """``<sha>-<pid>-<thread>-<token>``: one render's own folder."""
    return f"{sha256}-{os.getpid()}-{threading.get_ident()}-{process_token()}"


def writer_of(folder: Path) -> str:
    """Who uploads from a scratch folder: this host and the folder's name."""
    return f"{socket.gethostname()}/{folder.name}"


def is_stale(folder: Path) -> bool:
    """A scratch folder ``<sha>-<pid>[-<thread>-<token>]`` no render uses any more: of this
    very thread (the caller cleans up after itself), of a thread of ours that is gone, of an
    earlier process with our pid, or of a process that is gone."""
    _, pid_text, thread_text, token = ([*folder.name.split("-"), "", "", ""])[:4]
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        if token and token != process_token():
            return True
        if not thread_text.isdigit() or int(thread_text) == threading.get_ident():
            return True
        return int(thread_text) not in {t.ident for t in threading.enumerate()}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_tree(folder: Path) -> int:
    """Remove ``folder`` and its files; returns how many files went."""
    count = sum(1 for entry in folder.rglob("*") if entry.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return count
