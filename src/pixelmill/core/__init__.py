"""Pure image work: sniff, read header, decode, orient, colour, resize, encode.

Paths in, files and result objects out. No config, no store, no network.

The names below load on first use (PEP 562): a module that needs only the specs (the
command line, the settings) does not import Pillow and the codecs with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MANIFEST_NAME": "pixelmill.core.manifest",
    "manifest_dict": "pixelmill.core.manifest",
    "write_manifest": "pixelmill.core.manifest",
    "render_renditions": "pixelmill.core.render",
    "Probe": "pixelmill.core.source",
    "probe": "pixelmill.core.source",
    "DEFAULT_FORMATS": "pixelmill.core.specs",
    "DEFAULT_PRESETS": "pixelmill.core.specs",
    "Limits": "pixelmill.core.specs",
    "OutputFormat": "pixelmill.core.specs",
    "Preset": "pixelmill.core.specs",
    "RenderResult": "pixelmill.core.specs",
    "RenderSpec": "pixelmill.core.specs",
    "Rendition": "pixelmill.core.specs",
    "SourceInfo": "pixelmill.core.specs",
    "Timings": "pixelmill.core.specs",
}

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_PRESETS",
    "MANIFEST_NAME",
    "Limits",
    "OutputFormat",
    "Preset",
    "Probe",
    "RenderResult",
    "RenderSpec",
    "Rendition",
    "SourceInfo",
    "Timings",
    "manifest_dict",
    "probe",
    "render_renditions",
    "write_manifest",
]

if TYPE_CHECKING:
    from pixelmill.core.manifest import MANIFEST_NAME, manifest_dict, write_manifest
    from pixelmill.core.render import render_renditions
    from pixelmill.core.source import Probe, probe
    from pixelmill.core.specs import (
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixelmill.core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
