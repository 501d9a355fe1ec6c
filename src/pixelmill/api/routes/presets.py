"""``/v1/presets``: the catalogue a request chooses its renditions from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pixelmill.api.deps import ServiceDep
from pixelmill.api.schemas import PresetsOut, error_responses
from pixelmill.core.specs import Fit, OutputFormat, Preset, RenderSpec

# Malformed expires or sig: 400, checked after the API key (without it, 401 comes first).
router = APIRouter(
    prefix="/v1/presets",
    tags=["presets"],
)


def preset_entry(spec: RenderSpec, preset: Preset) -> dict[str, Any]:
    """One preset as the catalogue lists it: what it really renders (its formats, and the
    encoder quality of each), so a client needs no defaults of its own."""
    formats = spec.formats_of(preset)
    return {
        "name": preset.name,
        "width": preset.width,
        "height": preset.height,
        "fit": preset.fit.value,
        "gravity": preset.gravity.value if preset.fit is Fit.COVER else None,
        "formats": [fmt.value for fmt in formats],
        "quality": {
            fmt.value: spec.quality_of(fmt, preset)
            for fmt in formats
            if fmt is not OutputFormat.PNG
        },
    }


def catalogue(spec: RenderSpec) -> dict[str, Any]:
    """The body of ``GET /v1/presets`` for the service's spec."""
    return {
        "presets": [preset_entry(spec, preset) for preset in spec.presets],
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
