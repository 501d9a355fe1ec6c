"""The public API of the ``pixelmill`` package is exactly what ``__all__`` promises."""

from __future__ import annotations

import subprocess
import sys

import pixelmill


def test_every_exported_name_resolves() -> None:
    """Each name in ``__all__`` loads (lazily) and nothing private leaks into it."""
    for name in pixelmill.__all__:
        assert getattr(pixelmill, name) is not None
    assert set(pixelmill.__all__) >= {"render", "render_paths", "RenderSpec", "ImageError"}


def test_unknown_names_raise_attribute_error() -> None:
    """A typo is an AttributeError, not a silent None."""
    try:
        pixelmill.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_cli_does_not_import_pillow_before_the_worker_server() -> None:
    """``import pixelmill`` stays light, so the CLI can start its worker server first."""
    code = "import sys, pixelmill; print('PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
