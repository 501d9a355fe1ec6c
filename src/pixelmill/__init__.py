"""pixelmill: every rendition of every image, in parallel, de-duplicated, with a manifest.

The public names load on first use (PEP 562), so ``import pixelmill.cli`` can start the
worker server before Pillow and the core are imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_FORMATS": "pixelmill.core",
    "DEFAULT_PRESETS": "pixelmill.core",
    "Limits": "pixelmill.core",
    "OutputFormat": "pixelmill.core",
    "Preset": "pixelmill.core",
    "RenderResult": "pixelmill.core",
    "RenderSpec": "pixelmill.core",
    "Rendition": "pixelmill.core",
    "SourceInfo": "pixelmill.core",
    "Timings": "pixelmill.core",
    "ErrorCode": "pixelmill.errors",
    "ImageError": "pixelmill.errors",
    "PixelmillError": "pixelmill.errors",
    "render": "pixelmill.runner",
    "render_paths": "pixelmill.runner",
}

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_PRESETS",
    "ErrorCode",
    "ImageError",
    "Limits",
    "OutputFormat",
    "PixelmillError",
    "Preset",
    "RenderResult",
    "RenderSpec",
    "Rendition",
    "SourceInfo",
    "Timings",
    "__version__",
    "render",
    "render_paths",
]

if TYPE_CHECKING:
    from pixelmill.core import (
        DEFAULT_FORMATS,
        DEFAULT_PRESETS,
        Limits,
        OutputFormat,
        Preset,
        RenderResult,
        RenderSpec,
        Rendition,
        SourceInfo,
        Timings,
    )
    from pixelmill.errors import ErrorCode, ImageError, PixelmillError
    from pixelmill.runner import render, render_paths


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixelmill' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
