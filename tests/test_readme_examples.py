"""Every Python example in README.md runs as written, as a script of its own.

Each block runs in a fresh folder holding the files it names (``photo.jpg``, ``other.png``,
``photos/``); the service address ``http://127.0.0.1:8000`` is replaced by a real service
started here. Nothing else in the code is changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_helpers import small_jpeg, small_png
from api_server import running_in_thread
from pixelmill.api.app import create_app
from pixelmill.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
SERVICE_IN_README = "http://127.0.0.1:8000"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return _PYTHON_BLOCK.findall(README.read_text())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("readme-data"), workers=2)
    with running_in_thread(create_app(settings)) as url:
        yield url


def test_the_readme_has_the_library_and_client_examples() -> None:
    blocks = python_blocks()
    assert any("render_paths" in block for block in blocks)
    assert any("pixelmill.client" in block for block in blocks)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_a_readme_python_example_runs(index: int, service: str, tmp_path: Path) -> None:
    code = python_blocks()[index].replace(SERVICE_IN_README, service)
    (tmp_path / "photo.jpg").write_bytes(small_jpeg(1, (900, 600)))
    (tmp_path / "other.png").write_bytes(small_png(2))
    (tmp_path / "photos").mkdir()
    for seed in range(3):
        (tmp_path / "photos" / f"{seed}.jpg").write_bytes(small_jpeg(10 + seed))
    script = tmp_path / "example.py"
    script.write_text(code)

    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    if "render_paths" in code:
        # One render at the top, three through the pool, once each (not again per worker).
        manifests = list((tmp_path / "out" / "renditions").rglob("manifest.json"))
        assert len(manifests) == 4
        assert result.stdout.count("ImageOutcome(") == 3, result.stdout
        renders_at_top = [line for line in result.stdout.splitlines() if line.startswith("900 [")]
        assert len(renders_at_top) == 1, f"worker processes re-ran the example:\n{result.stdout}"
    if "pixelmill.client" in code:
        assert sorted(p.name for p in tmp_path.glob("*.webp")) == [
            "other.png.webp",
            "photo.jpg.webp",
        ]
        assert "not_found 404" in result.stdout
