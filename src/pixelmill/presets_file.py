"""The presets file: named boxes, how an image fills each, and their formats and qualities.

Read once by ``Settings.render_spec``; every problem is one ``ConfigError`` line naming the
file and the entry (docs/presets.md has the format).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pixelmill.core.specs import (
    DEFAULT_PRESETS,
    MAX_QUALITY,
    MIN_QUALITY,
    Fit,
    Gravity,
    OutputFormat,
    Preset,
)

_PRESET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # used with fullmatch
PRESETS_FORMAT = '{"name": [width, height] or {"width": ..., "height": ...}, ...}'
_PRESET_KEYS = ("width", "height", "fit", "gravity", "formats", "quality")
# Beyond any image the formats can hold (JPEG and WebP stop at 65535 and 16383 px a side).
MAX_PRESET_SIDE = 65535
# A presets file is a few hundred bytes; more than this is not one.
MAX_PRESETS_FILE_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A setting or the presets file is unusable; the message is one line for the user."""


def load_presets(path: Path | None) -> tuple[Preset, ...]:
    """Presets from a JSON file, or the defaults (docs/presets.md has the format).

    An entry is ``[width, height]`` (fit inside) or an object with ``width``, ``height``
    and optionally ``fit``, ``gravity``, ``formats`` and ``quality``.
    """
    if path is None:
        return DEFAULT_PRESETS
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_PRESETS_FILE_BYTES + 1)
        if len(raw) > MAX_PRESETS_FILE_BYTES:
            raise ConfigError(f"presets file {path} is over {MAX_PRESETS_FILE_BYTES} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read presets file {path}: {_reason(exc)}") from None
    try:
        data = json.loads(text, object_pairs_hook=_refuse_repeated_names)
    except _RepeatedName as repeated:
        raise ConfigError(
            f"presets file {path}, entry {repeated.name!r}: given more than once"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"presets file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"presets file {path} is nested too deeply to be presets") from None
    if not isinstance(data, dict):
        raise ConfigError(f"presets file {path} must be a JSON object {PRESETS_FORMAT}")
    if not data:
        raise ConfigError(f"presets file {path} defines no presets")
    return tuple(_preset_entry(path, name, box) for name, box in data.items())


class _RepeatedName(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _refuse_repeated_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members; a name twice is a mistake (json keeps the last silently)."""
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise _RepeatedName(name)
        members[name] = value
    return members


def _preset_entry(path: Path, name: str, box: Any) -> Preset:
    """One ``"name": [width, height]`` or ``"name": {...}`` entry, or ConfigError naming it."""
    where = f"presets file {path}, entry {name!r}"
    if not _PRESET_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: a name is letters, digits and _ (not starting with a digit, at most 64)"
        )
    if isinstance(box, dict):
        return _preset_object(where, name, box)
    if not isinstance(box, list) or len(box) != 2 or not all(_is_size(side) for side in box):
        shown = json.dumps(box)[:60]
        raise ConfigError(
            f"{where}: expected [width, height] whole numbers from 1 to {MAX_PRESET_SIDE} "
            f'or an object {{"width": ..., "height": ...}}, got {shown}'
        )
    return Preset(name, box[0], box[1])


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PRESET_SIDE


def _preset_object(where: str, name: str, entry: dict[str, Any]) -> Preset:
    """An object entry: ``{"width": 1200, "height": 630, "fit": "cover", ...}``."""
    unknown = [key for key in entry if key not in _PRESET_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_PRESET_KEYS)})")
    for side in ("width", "height"):
        if side not in entry:
            raise ConfigError(f"{where}: {side} is missing")
        if not _is_size(entry[side]):
            shown = json.dumps(entry[side])[:60]
            raise ConfigError(
                f"{where}: {side} must be a whole number from 1 to {MAX_PRESET_SIDE}, got {shown}"
            )
    fit = _choice(where, "fit", entry.get("fit", Fit.INSIDE.value), Fit)
    gravity = _choice(where, "gravity", entry.get("gravity", Gravity.CENTER.value), Gravity)
    if "gravity" in entry and fit is Fit.INSIDE:
        raise ConfigError(f'{where}: gravity needs "fit": "cover" (fit inside keeps everything)')
    formats = _preset_formats(where, entry["formats"]) if "formats" in entry else None
    quality = _preset_quality(where, entry.get("quality", {}), formats)
    return Preset(name, entry["width"], entry["height"], fit, gravity, formats, quality)


def _choice(where: str, key: str, value: Any, kind: type[Fit] | type[Gravity]) -> Any:
    allowed = ", ".join(repr(member.value) for member in kind)
    if not isinstance(value, str) or value not in {member.value for member in kind}:
        raise ConfigError(f"{where}: {key} must be one of {allowed}, got {json.dumps(value)[:60]}")
    return kind(value)


def _format_name(where: str, value: Any) -> OutputFormat:
    known = ", ".join(f.value for f in OutputFormat)
    name = value.lower() if isinstance(value, str) else None
    if name not in {"jpg", *(f.value for f in OutputFormat)}:
        raise ConfigError(f"{where}: unknown format {json.dumps(value)[:60]} (one of {known})")
    return OutputFormat("jpeg" if name == "jpg" else name)


def _preset_formats(where: str, value: Any) -> tuple[OutputFormat, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}: formats must be a list of one or more, e.g. ["jpeg", "webp"]')
    formats = tuple(_format_name(where, item) for item in value)
    if len(set(formats)) != len(formats):
        raise ConfigError(f"{where}: formats names a format twice")
    return formats


def _preset_quality(
    where: str, value: Any, formats: tuple[OutputFormat, ...] | None
) -> tuple[tuple[OutputFormat, int], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: quality must be an object, e.g. {{"jpeg": 80}}')
    qualities: list[tuple[OutputFormat, int]] = []
    for key, number in value.items():
        fmt = _format_name(where, key)
        if fmt is OutputFormat.PNG:
            raise ConfigError(f"{where}: png is lossless and takes no quality")
        if formats is not None and fmt not in formats:
            raise ConfigError(f"{where}: quality for {fmt.value}, which the preset does not render")
        if not _is_size(number) or number > MAX_QUALITY:
            raise ConfigError(
                f"{where}: quality of {fmt.value} must be a whole number "
                f"{MIN_QUALITY}-{MAX_QUALITY}, got {json.dumps(number)[:60]}"
            )
        if fmt in dict(qualities):
            raise ConfigError(f"{where}: quality of {fmt.value} is given twice")
        qualities.append((fmt, number))
    return tuple(qualities)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
