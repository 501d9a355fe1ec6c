"""Pure image work: sniff, read header, decode, orient, colour, resize, encode.

Paths in, files and result objects out. No config, no store, no network.
"""

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
