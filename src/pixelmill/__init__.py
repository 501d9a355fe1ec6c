"""pixelmill: every rendition of every image, in parallel, de-duplicated, with a manifest."""

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

__version__ = "0.1.0"

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
]
