"""``pixelmill`` options beyond the render itself: --version, skipped non-images, --quality,
help text, and ``serve --data-dir/--workers``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixelmill.cli import app
from test_cli import clean_env, invoke, read_report, write_photo


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CliRunner whose working directory is ``tmp_path``, with no PIXELMILL_* settings."""
    for name in list(os.environ):
        if name.startswith("PIXELMILL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_version_flag_prints_the_installed_version_and_exits_0() -> None:
    """Through the installed entry point, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "pixelmill", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"pixelmill {metadata.version('pixelmill')}\n"
