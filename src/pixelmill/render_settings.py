"""The settings rendering reads, known without pydantic when the environment sets none.

``pixelmill run`` needs ten of the ``PIXELMILL_*`` settings, and importing the ``Settings``
model (pydantic, pydantic-settings) took about a quarter of a second of every run. With no
``PIXELMILL_*`` variable in the environment every setting is its default, which needs no
validating: ``load_render_settings`` then builds them here. Otherwise it reads and checks
them all through ``Settings`` as before, so a bad variable still stops ``run`` with the
same one line. ``Settings`` takes its defaults from the constants below: one source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pixelmill.core.specs import DEFAULT_FORMATS, Limits, OutputFormat, RenderSpec
from pixelmill.presets_file import load_presets

ENV_PREFIX = "PIXELMILL_"

DEFAULT_MEMORY_BUDGET_MB = 640
DEFAULT_MAX_TASKS_PER_CHILD = 200
DEFAULT_FORMAT_NAMES = "jpeg,webp"
DEFAULT_JPEG_BACKGROUND = "#ffffff"
DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_IMAGE_TIMEOUT_S = 60.0


def default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class RenderSettings:
    """What a render reads of the settings (the names and meanings of ``Settings``)."""

    workers: int = field(default_factory=default_workers)
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB
    max_tasks_per_child: int = DEFAULT_MAX_TASKS_PER_CHILD
    presets_file: Path | None = None
    formats: str = DEFAULT_FORMAT_NAMES
    jpeg_background: str = DEFAULT_JPEG_BACKGROUND
    keep_metadata: bool = False
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_timeout_s: float = DEFAULT_IMAGE_TIMEOUT_S

    @property
    def limits(self) -> Limits:
        return Limits(
            max_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
            timeout_s=self.image_timeout_s,
        )

    def render_spec(
        self, presets_file: Path | None = None, formats: str | None = None
    ) -> RenderSpec:
        """The render spec these settings describe (CLI flags may override two parts)."""
        presets = load_presets(presets_file or self.presets_file)
        return RenderSpec(
            presets=presets,
            formats=parse_formats(formats or self.formats),
            limits=self.limits,
            background=parse_colour(self.jpeg_background),
            keep_metadata=self.keep_metadata,
        )


def environment_sets_any() -> bool:
    """True when some ``PIXELMILL_*`` variable is set (pydantic-settings matches names
    whatever their case, so this does too)."""
    return any(name.upper().startswith(ENV_PREFIX) for name in os.environ)


def load_render_settings() -> RenderSettings:
    """The render settings of this environment; ConfigError (one line) for a bad value.

    Like ``load_settings(check_spec=False, check_deployment=False)``: every variable is
    checked, the presets file is read later by ``render_spec``.
    """
    if not environment_sets_any():
        return RenderSettings()
    from pixelmill.config import load_settings

    return load_settings(check_spec=False, check_deployment=False).render_settings()


def parse_colour(value: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> (r, g, b); raises ValueError otherwise."""
    text = value.strip().lstrip("#")
    if len(text) != 6 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"{value!r} is not a #rrggbb colour")
    red, green, blue = (int(text[i : i + 2], 16) for i in (0, 2, 4))
    return red, green, blue


def parse_formats(value: str) -> tuple[OutputFormat, ...]:
    """``"jpeg,webp"`` -> (JPEG, WEBP); raises ValueError naming the unknown format."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if not names:
        return DEFAULT_FORMATS
    aliases = {"jpg": "jpeg"}
    known = {f.value for f in OutputFormat}
    formats: list[OutputFormat] = []
    for name in names:
        name = aliases.get(name, name)
        if name not in known:
            raise ValueError(f"unknown format {name!r}; choose from {', '.join(sorted(known))}")
        if OutputFormat(name) not in formats:
            formats.append(OutputFormat(name))
    return tuple(formats)
