"""manifest.json: build it from a result, write it atomically, read it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixelmill.core.encode import write_atomically
from pixelmill.core.specs import OutputFormat, RenderResult, Rendition, SourceInfo, Timings

MANIFEST_NAME = "manifest.json"
# 2: source.width/height are the displayed size (after EXIF orientation). Manifests without
# the field were written before that and hold the stored size.
MANIFEST_VERSION = 2
_SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations stored on their side


def manifest_dict(
    result: RenderResult, renditions: list[Rendition] | None = None
) -> dict[str, object]:
    """The manifest.json body of DESIGN.md for ``result``."""
    listed = renditions if renditions is not None else result.renditions
    return {
        "sha256": result.sha256,
        "source": result.source.as_dict(),
        "placeholder": result.placeholder,
        "renditions": [r.as_dict() for r in listed],
        "timings_ms": result.timings.as_dict(),
        "manifest_version": MANIFEST_VERSION,
    }


def write_manifest(out_dir: str | Path, manifest: dict[str, object]) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    body = json.dumps(manifest, indent=2).encode()
    write_atomically(path, lambda file: file.write(body))
    return path


def read_manifest_file(folder: Path) -> dict[str, Any] | None:
    """The manifest in ``folder`` in the current version, or None when there is none."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError, RecursionError):
        return None  # RecursionError: JSON nested beyond reason is no manifest of ours
    return upgrade_manifest(data) if isinstance(data, dict) else None


def upgrade_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as the current version describes it: an older manifest of a sideways-stored
    source gets its displayed size (its renditions were upright already). Idempotent."""
    version = data.get("manifest_version")
    if isinstance(version, int) and version >= MANIFEST_VERSION:
        return data
    upgraded = dict(data, manifest_version=MANIFEST_VERSION)
    source = data.get("source")
    if isinstance(source, dict) and source.get("orientation") in _SIDEWAYS:
        upgraded["source"] = dict(source, width=source.get("height"), height=source.get("width"))
    return upgraded


def _placeholder(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def render_result_from_manifest(data: dict[str, Any]) -> RenderResult | None:
    """The RenderResult a manifest describes, or None if it is not a manifest we wrote."""
    try:
        source = upgrade_manifest(data)["source"]
        timings = data.get("timings_ms") or {}
        return RenderResult(
            sha256=str(data["sha256"]),
            source=SourceInfo(
                format=str(source["format"]),
                width=int(source["width"]),
                height=int(source["height"]),
                bytes=int(source["bytes"]),
                orientation=int(source["orientation"]),
                mode=str(source["mode"]),
                icc=bool(source["icc"]),
                frames=None if source.get("frames") is None else int(source["frames"]),
            ),
            renditions=tuple(
                Rendition(
                    name=str(r["name"]),
                    format=OutputFormat(r["format"]),
                    width=int(r["width"]),
                    height=int(r["height"]),
                    bytes=int(r["bytes"]),
                    filename=str(r["path"]),
                )
                for r in data["renditions"]
            ),
            timings=Timings(
                **{k: float(v) for k, v in timings.items() if k in Timings.__annotations__}
            ),
            # Manifests written before placeholders existed have none.
            placeholder=_placeholder(data.get("placeholder")),
        )
    except (KeyError, TypeError, ValueError):
        return None
