"""Value types that cross process boundaries: what to render and what came out.

All are frozen dataclasses of plain values, so they pickle cheaply and never carry pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    WEBP = "webp"
    AVIF = "avif"
    PNG = "png"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.JPEG else self.value

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @property
    def is_lossy(self) -> bool:
        """Takes an encoder quality (PNG is lossless)."""
        return self is not OutputFormat.PNG

    @property
    def keeps_alpha(self) -> bool:
        return self is not OutputFormat.JPEG


DEFAULT_QUALITY: dict[OutputFormat, int] = {
    OutputFormat.JPEG: 85,
    OutputFormat.WEBP: 80,
    OutputFormat.AVIF: 60,
    OutputFormat.PNG: 100,  # lossless; quality is ignored
}

MIN_QUALITY, MAX_QUALITY = 1, 100


def parse_quality(value: str) -> dict[OutputFormat, int]:
    """``"jpeg=80,webp=75"`` -> {JPEG: 80, WEBP: 75}; raises ValueError with one line.

    PNG is refused rather than ignored: it is lossless, so a quality for it would be a
    setting that silently does nothing.
    """
    qualities: dict[OutputFormat, int] = {}
    for item in (part.strip() for part in value.split(",")):
        name, equals, number = (text.strip() for text in item.partition("="))
        if not equals or not name or not number:
            raise ValueError(f"quality {item!r} is not FORMAT=QUALITY, e.g. jpeg=80,webp=75")
        try:
            fmt = OutputFormat("jpeg" if name.lower() == "jpg" else name.lower())
        except ValueError:
            lossy = ", ".join(f.value for f in OutputFormat if f is not OutputFormat.PNG)
            raise ValueError(f"unknown format {name!r} in quality (one of {lossy})") from None
        if fmt is OutputFormat.PNG:
            raise ValueError("png is lossless and takes no quality")
        if not number.isdecimal() or not MIN_QUALITY <= int(number) <= MAX_QUALITY:
            raise ValueError(
                f"quality of {fmt.value} must be {MIN_QUALITY}-{MAX_QUALITY}, not {number!r}"
            )
        if fmt in qualities:
            raise ValueError(f"quality of {fmt.value} is given twice")
        qualities[fmt] = int(number)
    return qualities


class Fit(StrEnum):
    """How a rendition fills its preset's box (never upscaled either way)."""

    INSIDE = "inside"  # the whole image within the box
    COVER = "cover"  # the box filled exactly, the overflow cropped


class Gravity(StrEnum):
    """Which part of the image a cover crop keeps."""

    CENTER = "center"
    ATTENTION = "attention"  # the most salient region (skin, saturation, edges)
    ENTROPY = "entropy"  # the busiest region (highest Shannon entropy)


@dataclass(frozen=True)
class Preset:
    """A named box, how the image fills it, and optionally its own formats and qualities.

    ``formats`` None means the spec's formats; ``quality`` overrides the spec's encoder
    quality for this preset only (pairs, so the preset stays hashable).
    """

    name: str
    width: int
    height: int
    fit: Fit = Fit.INSIDE
    gravity: Gravity = Gravity.CENTER
    formats: tuple[OutputFormat, ...] | None = None
    quality: tuple[tuple[OutputFormat, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.width < 1 or self.height < 1:
            raise ValueError(f"invalid preset {self.name!r} {self.width}x{self.height}")
        object.__setattr__(self, "fit", Fit(self.fit))
        object.__setattr__(self, "gravity", Gravity(self.gravity))
        if self.fit is Fit.INSIDE and self.gravity is not Gravity.CENTER:
            raise ValueError("gravity applies to fit cover only")
        if self.formats is not None:
            formats = tuple(OutputFormat(f) for f in self.formats)
            if not formats or len(set(formats)) != len(formats):
                raise ValueError("a preset's formats must be one or more distinct formats")
            object.__setattr__(self, "formats", formats)
        quality = tuple((OutputFormat(f), int(q)) for f, q in self.quality)
        if len({f for f, _ in quality}) != len(quality) or not all(
            MIN_QUALITY <= q <= MAX_QUALITY for _, q in quality
        ):
            raise ValueError(f"a preset's quality is one {MIN_QUALITY}-{MAX_QUALITY} per format")
        object.__setattr__(self, "quality", quality)


DEFAULT_PRESETS: tuple[Preset, ...] = (
    Preset("thumbnail", 150, 150),
    Preset("medium", 800, 800),
    Preset("large", 1920, 1920),
)
DEFAULT_FORMATS: tuple[OutputFormat, ...] = (OutputFormat.JPEG, OutputFormat.WEBP)


@dataclass(frozen=True)
class Limits:
    """Refuse an image before spending memory or time on it."""

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 100_000_000
    timeout_s: float = 60.0


@dataclass(frozen=True)
class RenderSpec:
    """Everything the core needs to render one source: sizes, formats, encoders, limits."""

    presets: tuple[Preset, ...] = DEFAULT_PRESETS
    formats: tuple[OutputFormat, ...] = DEFAULT_FORMATS
    quality: tuple[tuple[OutputFormat, int], ...] = tuple(DEFAULT_QUALITY.items())
    background: tuple[int, int, int] = (255, 255, 255)  # behind transparency in JPEG
    keep_metadata: bool = False  # keep EXIF (minus orientation); XMP, ICC, comments still go
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not self.presets or not self.formats:
            raise ValueError("a render spec needs at least one preset and one format")
        if len({p.name for p in self.presets}) != len(self.presets):
            raise ValueError("preset names must be unique")

    def with_quality(self, overrides: dict[OutputFormat, int]) -> RenderSpec:
        """This spec with the encoder quality of some formats replaced (``--quality``)."""
        merged = dict(self.quality) | overrides
        return replace(self, quality=tuple(merged.items()))

    def formats_of(self, preset: Preset) -> tuple[OutputFormat, ...]:
        """The formats ``preset`` renders in: its own when it has them, else the spec's."""
        return self.formats if preset.formats is None else preset.formats

    def quality_of(self, fmt: OutputFormat, preset: Preset | None = None) -> int:
        """Encoder quality: the preset's own, else the spec's, else the format's default."""
        if preset is not None and fmt in dict(preset.quality):
            return dict(preset.quality)[fmt]
        return dict(self.quality).get(fmt, DEFAULT_QUALITY[fmt])

    def select(
        self, presets: Sequence[str] | None = None, formats: Sequence[OutputFormat] | None = None
    ) -> RenderSpec:
        """This spec narrowed to a request's choice from the catalogue (None: all of it).

        Presets keep the catalogue's order. ``formats`` replaces the spec's formats and
        narrows a preset's own formats to those it shares with them; a preset left with
        none is dropped. A name outside the catalogue, or a choice that leaves no
        rendition, raises ValueError with one line for the user.
        """
        chosen = self.presets
        if presets is not None:
            known = {p.name for p in self.presets}
            unknown = [name for name in presets if name not in known]
            if unknown:
                listed = ", ".join(p.name for p in self.presets)
                raise ValueError(f"unknown preset {unknown[0]!r} (the catalogue has {listed})")
            wanted = set(presets)
            chosen = tuple(p for p in self.presets if p.name in wanted)
        kept_formats = self.formats if formats is None else tuple(dict.fromkeys(formats))
        if formats is not None:
            chosen = tuple(
                narrowed for p in chosen if (narrowed := _narrowed(p, kept_formats)) is not None
            )
        if not chosen or not kept_formats:
            raise ValueError("the choice of presets and formats leaves no rendition")
        return replace(self, presets=chosen, formats=kept_formats)

    def rendition_names(self) -> list[str]:
        """File names of every rendition this spec asks for, e.g. ``large.webp``."""
        return [f"{p.name}.{f.extension}" for p in self.presets for f in self.formats_of(p)]


def _narrowed(preset: Preset, formats: tuple[OutputFormat, ...]) -> Preset | None:
    """``preset`` with its own formats cut to ``formats`` (None when none are left)."""
    if preset.formats is None:
        return preset
    shared = tuple(f for f in preset.formats if f in formats)
    return replace(preset, formats=shared) if shared else None


@dataclass(frozen=True)
class SourceInfo:
    format: str
    width: int
    height: int
    bytes: int
    orientation: int
    mode: str
    icc: bool
    frames: int | None  # None: an animated GIF whose frames were not counted (see README)

    def as_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "orientation": self.orientation,
            "mode": self.mode,
            "icc": self.icc,
            "frames": self.frames,
        }


@dataclass(frozen=True)
class Rendition:
    name: str
    format: OutputFormat
    width: int
    height: int
    bytes: int
    filename: str  # e.g. "large.webp", relative to the image's rendition folder

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "format": self.format.value,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "path": self.filename,
        }


STAGES = ("read", "decode", "resize", "encode")


@dataclass(frozen=True)
class Timings:
    read: float = 0.0
    decode: float = 0.0
    resize: float = 0.0
    encode: float = 0.0
    total: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "read": round(self.read, 1),
            "decode": round(self.decode, 1),
            "resize": round(self.resize, 1),
            "encode": round(self.encode, 1),
            "total": round(self.total, 1),
        }


@dataclass(frozen=True)
class RenderResult:
    """What rendering one source produced (all renditions the spec asked for)."""

    sha256: str
    source: SourceInfo
    renditions: tuple[Rendition, ...]
    timings: Timings
    # A ThumbHash (base64) of the upright image: a few dozen bytes a page paints first.
    placeholder: str | None = None
