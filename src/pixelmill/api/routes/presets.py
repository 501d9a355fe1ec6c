"""``/v1/presets``: the catalogue a request chooses its renditions from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pixelmill.api.deps import ServiceDep
from pixelmill.api.schemas import PresetsOut, error_responses
from pixelmill.core.specs import OutputFormat, Preset, RenderSpec

router = APIRouter(prefix="/v1/presets", tags=["presets"])


def _plain(value: Any) -> Any:
    """An enum's value, anything else as it is."""
    return getattr(value, "value", value)


def preset_entry(preset: Preset) -> dict[str, Any]:
    """One preset as the catalogue lists it (fit, gravity, formats, quality: their defaults
    when the preset does not set them)."""
    formats = getattr(preset, "formats", None)
    quality = getattr(preset, "quality", None) or {}
    pairs = quality.items() if isinstance(quality, dict) else quality
    return {
        "name": preset.name,
        "width": preset.width,
        "height": preset.height,
        "fit": _plain(getattr(preset, "fit", None) or "inside"),
        "gravity": _plain(getattr(preset, "gravity", None)),
        "formats": None if formats is None else [_plain(f) for f in formats],
        "quality": {_plain(fmt): int(value) for fmt, value in pairs},
    }


def catalogue(spec: RenderSpec) -> dict[str, Any]:
    """The body of ``GET /v1/presets`` for the service's spec."""
    return {
        "presets": [preset_entry(preset) for preset in spec.presets],
        "formats": [fmt.value for fmt in OutputFormat],
        "default_formats": [fmt.value for fmt in spec.formats],
    }


@router.get(
    "",
    summary="The catalogue: presets (box, fit, gravity, formats, quality) and formats",
    response_model=PresetsOut,
    responses=error_responses(401),
)
async def list_presets(service: ServiceDep) -> dict[str, Any]:
    """What ``presets`` and ``formats`` on an upload may choose from."""
    return catalogue(service.spec)
