"""Under a ``TMPDIR`` too long for a socket path, the workers' fork server puts its socket
folder in ``/tmp``, else ``/var/tmp`` or ``/dev/shm``; where none of them is writable,
``run`` and ``serve`` say so in one line and exit 2. Each case runs in its own mount
namespace (``unshare -m``, as root) whose system temp folders are read-only binds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import IN_CI

# Makes each of $READ_ONLY a read-only bind of itself, gives back $WORK (the test's folder,
# under /tmp perhaps) writable, and a fresh tmpfs on each of $PRIVATE; runs the command,
# then lists what is left in $PRIVATE. Exit 97: the namespace could not be set up.
_NAMESPACE = """
for d in $READ_ONLY; do
    mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || exit 97
done
mount --bind "$WORK" "$WORK" && mount -o remount,bind,rw "$WORK" || exit 97
for d in $PRIVATE; do mount -t tmpfs -o mode=1777 tmpfs "$d" || exit 97; done
timeout -k 5 60 "$@"
code=$?
for d in $PRIVATE; do ls -A "$d"; done
exit $code
"""
_NOT_SET_UP = 97
_SYSTEM_TEMP = ["/tmp", "/var/tmp", "/dev/shm"]


def _in_namespace(
    work: Path, read_only: list[str], private: list[str], command: list[str], tmpdir: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIXELMILL_")}
    env.update(
        TMPDIR=str(tmpdir), WORK=str(work), READ_ONLY=" ".join(read_only), PRIVATE=" ".join(private)
    )
    try:
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", _NAMESPACE, "sh", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError as exc:
        done = subprocess.CompletedProcess([], _NOT_SET_UP, "", str(exc))
    if done.returncode == _NOT_SET_UP or "unshare:" in done.stderr:
        reason = f"cannot make a mount namespace (needs root): {done.stderr.strip()}"
        if IN_CI:
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return done


def _long_tmpdir(work: Path) -> Path:
    """Empty, and too long for a socket path (the limit is 75 bytes)."""
    folder = work / ("t" * 100)
    folder.mkdir()
    return folder


def _photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 120, 40)).save(folder / "a.jpg", "JPEG")
    return folder


def test_a_read_only_tmp_puts_the_socket_folder_in_var_tmp_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Was a traceback: the socket folder could go nowhere but /tmp."""
    long_tmp = _long_tmpdir(tmp_path)
    photos = _photo(tmp_path / "photos")
    out, report = tmp_path / "out", tmp_path / "report.json"
    run = [sys.executable, "-m", "pixelmill", "run", str(photos), "-o", str(out)]
    run += ["--workers", "2", "--no-progress", "--report", str(report)]
    done = _in_namespace(tmp_path, ["/tmp"], ["/var/tmp", "/dev/shm"], run, long_tmp)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["summary"]["done"] == 1
    assert done.stdout == ""  # nothing left in /var/tmp or /dev/shm
    assert list(long_tmp.iterdir()) == []


COMMANDS = {
    "run": ["pixelmill", "run", "{photos}", "-o", "{out}", "--no-progress"],
    "run-typer": ["pixelmill.cli", "run", "{photos}", "-o", "{out}", "--no-progress"],
    "serve": ["pixelmill", "serve", "--port", "0", "--data-dir", "{out}", "--workers", "1"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_no_writable_short_folder_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    """Was a traceback for ``run``, and a ``serve`` that took jobs no worker could render."""
    long_tmp = _long_tmpdir(tmp_path)
    photos, out = _photo(tmp_path / "photos"), tmp_path / "out"
    args = [a.format(photos=photos, out=out) for a in COMMANDS[name]]
    done = _in_namespace(tmp_path, _SYSTEM_TEMP, [], [sys.executable, "-m", *args], long_tmp)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot make a folder for the worker processes' socket")
    assert f"{long_tmp} is too long for a socket path" in lines[0]
    assert "/tmp: Read-only file system" in lines[0]
    assert lines[0].endswith("set TMPDIR to a writable folder of at most 75 bytes")
    assert not out.exists()
    assert list(long_tmp.iterdir()) == []


def test_a_folder_made_earlier_under_a_long_tmpdir_is_refused_in_one_line(tmp_path: Path) -> None:
    """Other multiprocessing use in the process made its folder under a long TMPDIR first:
    the check says so, rather than passing and letting the first worker fail."""
    long_tmp = _long_tmpdir(tmp_path)
    script = (
        "from multiprocessing import util; util.get_temp_dir()\n"
        "from pixelmill.engine import forkserver\n"
        "try:\n"
        "    forkserver.worker_context()\n"
        "except forkserver.NoSocketFolder as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {**os.environ, "TMPDIR": str(long_tmp)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: this process already made"), done.stdout
