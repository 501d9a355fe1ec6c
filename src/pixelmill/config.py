"""Settings, from ``PIXELMILL_*`` environment variables; read once by the composition roots."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pixelmill.core.specs import Limits, RenderSpec
from pixelmill.presets_file import ConfigError, load_presets
from pixelmill.render_settings import (
    DEFAULT_FORMAT_NAMES,
    DEFAULT_IMAGE_TIMEOUT_S,
    DEFAULT_JPEG_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_TASKS_PER_CHILD,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MEMORY_BUDGET_MB,
    RenderSettings,
    default_workers,
    parse_colour,
    parse_formats,
)

__all__ = [
    "ConfigError",
    "Settings",
    "get_settings",
    "load_presets",
    "load_settings",
    "parse_colour",
    "parse_formats",
]

# A segment of an S3 key prefix: no "." or "..", no separators, no control characters.
_PLAIN_SEGMENT = re.compile(r"(?!\.{1,2}$)[^/\\\x00-\x1f\x7f]{1,255}")


class Settings(BaseSettings):
    """Every setting with its default; see the README's Settings table."""

    model_config = SettingsConfigDict(env_prefix="PIXELMILL_", frozen=True)

    data_dir: Path = Field(Path("./pixelmill-data"), description="Renditions, spool, store file.")
    store: str = Field("sqlite", description="'sqlite' or a redis:// URL.")
    redis_prefix: str = Field("pixelmill:", description="Key prefix in Redis.")
    workers: int = Field(default_factory=default_workers, ge=1, le=256)
    api_key: str | None = Field(None, description="When set, /v1 needs 'Bearer <key>'.")
    # -- serving to browsers (docs/api.md, "Signed URLs, public renditions and CORS") -----
    url_signing_previous_keys: str | None = Field(
        None, description="Comma-separated keys signed URLs are still accepted with (rotation)."
    )
    url_signing_key: str | None = Field(
        None, min_length=16, description="Key of signed URLs; default: derived from api_key."
    )
    url_ttl_s: int = Field(86_400, gt=0, le=10 * 365 * 86_400, description="Signed URL life.")
    public_renditions: bool = Field(False, description="Renditions, manifests need no auth.")
    cors_origins: str | None = Field(None, description="Comma-separated CORS origins, or *.")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for callbacks.")
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="Per file.")
    max_batch_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1, description="Per request body.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        # Pillow refuses more than 2 x Image.MAX_IMAGE_PIXELS at open, whatever we allow.
        le=178_956_970,
        description="width x height, inclusive.",
    )
    image_timeout_s: float = Field(DEFAULT_IMAGE_TIMEOUT_S, gt=0)
    memory_budget_mb: int = Field(
        DEFAULT_MEMORY_BUDGET_MB,
        ge=64,
        description="Estimated decode memory allowed in flight across workers.",
    )
    max_tasks_per_child: int = Field(
        DEFAULT_MAX_TASKS_PER_CHILD, ge=1, description="Recycle a worker after this many."
    )
    presets_file: Path | None = Field(None, description="JSON presets, replaces the defaults.")
    formats: str = Field(DEFAULT_FORMAT_NAMES, description="Comma-separated output formats.")
    jpeg_background: str = Field(
        DEFAULT_JPEG_BACKGROUND, description="Colour behind transparency in JPEG."
    )
    keep_metadata: bool = Field(False, description="Keep EXIF (minus orientation).")
    batch_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="Finished batches expire (redis).")
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_allow_private: bool = Field(
        False, description="Allow callbacks to loopback and private addresses."
    )
    max_files_per_batch: int = Field(10_000, ge=1, description="File parts per request.")
    client_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds a client may stay silent mid-request."
    )
    max_connections: int = Field(
        1024, ge=1, description="Open connections at once; more are answered 503."
    )
    # -- scale-out (docs/scale-out.md) ---------------------------------------------------
    engine: str = Field("local", description="'local' (own process pool) or 'celery'.")
    broker_url: str | None = Field(None, description="Celery broker: redis:// or amqp://.")
    celery_queue: str = Field("pixelmill", description="Queue the render tasks go through.")
    visibility_timeout_s: float | None = Field(
        None, gt=0, description="Unacknowledged tasks are redelivered after this (redis broker)."
    )
    storage: str | None = Field(
        None, description="file://<folder> (default: the data dir) or s3://bucket[/prefix]."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (not AWS).")
    storage_public_url: str | None = Field(
        None, description="Renditions are redirected (307) to <this>/<key>."
    )

    @field_validator("url_signing_key", mode="before")
    @classmethod
    def _empty_signing_key_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("api_key", "url_signing_key", "url_signing_previous_keys")
    @classmethod
    def _keys_are_visible_ascii(cls, value: str | None) -> str | None:
        # A key read from a file with its line end, or with a letter a header cannot carry,
        # would never match what clients send: refuse it at start rather than 401 everyone.
        if value is not None and not VISIBLE_ASCII.fullmatch(value.replace(",", "")):
            raise ValueError("must be visible ASCII characters (no spaces or line ends)")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str | None) -> str | None:
        if value is None:
            return None
        origins = parse_origins(value)
        return ",".join(origins) or None

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The origins CORS answers for (``*``: any); empty when CORS is off."""
        return parse_origins(self.cors_origins or "")

    @property
    def url_signing_secret(self) -> bytes | None:
        """The key URLs are signed with; None without an API key (nothing is signed then).

        Without ``url_signing_key`` it is the HMAC-SHA256 of "pixelmill url signing" keyed by
        the API key, so every service of a deployment that shares the API key signs and
        checks alike.
        """
        if not self.api_key:
            return None
        if self.url_signing_key:
            return self.url_signing_key.encode()
        return hmac.new(self.api_key.encode(), URL_SIGNING_LABEL, hashlib.sha256).digest()

    @property
    def url_previous_secrets(self) -> tuple[bytes, ...]:
        """Keys signed URLs are still accepted with, not signed with (a key being rotated)."""
        if not self.api_key or not self.url_signing_previous_keys:
            return ()
        return tuple(k.encode() for k in self.url_signing_previous_keys.split(",") if k)

    @field_validator("store")
    @classmethod
    def _store_is_known(cls, value: str) -> str:
        if value != "sqlite" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected 'sqlite' or a redis:// (rediss://, unix://) URL")
        return value

    @field_validator("engine")
    @classmethod
    def _engine_is_known(cls, value: str) -> str:
        if value not in ("local", "celery"):
            raise ValueError("expected 'local' or 'celery'")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_is_known(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("redis://", "rediss://", "amqp://", "amqps://")
        ):
            raise ValueError("expected a redis:// or amqp:// URL")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_is_known(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("s3://"):
            bucket = value.removeprefix("s3://").split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError("expected s3://<bucket>[/<prefix>] with a valid bucket name")
            value = value.rstrip("/")
            prefix = value.removeprefix(f"s3://{bucket}").removeprefix("/")
            # Stores normalise "." and ".." segments, "//" and "\\" differently (the keys
            # would not be where we list them, or in another bucket): refuse them here.
            if prefix and not all(_PLAIN_SEGMENT.fullmatch(s) for s in prefix.split("/")):
                raise ValueError("the prefix after the bucket must be plain names joined by /")
            return value
        if value.startswith("file://") and len(value) > len("file://"):
            return value
        raise ValueError("expected file://<folder> or s3://<bucket>[/<prefix>]")

    @field_validator("celery_queue")
    @classmethod
    def _queue_is_a_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", value):
            raise ValueError("expected letters, digits and _ . : - only")
        return value

    @property
    def effective_visibility_timeout_s(self) -> float:
        """Redelivery delay of a dead worker's tasks: a few image timeouts, at least 60 s."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return max(60.0, 4 * self.image_timeout_s)

    def check_deployment(self) -> None:
        """Combinations that cannot work; raises ConfigError with one line."""
        if self.engine == "celery":
            if not self.broker_url:
                raise ConfigError("PIXELMILL_ENGINE=celery needs PIXELMILL_BROKER_URL")
            if self.store == "sqlite":
                raise ConfigError(
                    "PIXELMILL_ENGINE=celery needs PIXELMILL_STORE=redis://... "
                    "(state every machine shares); sqlite is local to one machine"
                )
            floor = self.image_timeout_s + 10
            if self.visibility_timeout_s is not None and self.visibility_timeout_s < floor:
                # A render still running when its message comes back would start again.
                raise ConfigError(
                    f"PIXELMILL_VISIBILITY_TIMEOUT_S={self.visibility_timeout_s:g} must be at "
                    f"least PIXELMILL_IMAGE_TIMEOUT_S + 10 ({floor:g}) with the celery engine"
                )
        if self.storage_public_url is not None and not self.storage_public_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("PIXELMILL_STORAGE_PUBLIC_URL must be an http(s):// URL")

    @field_validator("jpeg_background")
    @classmethod
    def _background_is_a_colour(cls, value: str) -> str:
        parse_colour(value)
        return value

    @field_validator("formats")
    @classmethod
    def _formats_are_known(cls, value: str) -> str:
        parse_formats(value)
        return value

    @cached_property
    def limits(self) -> Limits:
        return self.render_settings().limits

    def render_settings(self) -> RenderSettings:
        """The part of these settings a render reads (``pixelmill run`` needs no more)."""
        return RenderSettings(
            workers=self.workers,
            memory_budget_mb=self.memory_budget_mb,
            max_tasks_per_child=self.max_tasks_per_child,
            presets_file=self.presets_file,
            formats=self.formats,
            jpeg_background=self.jpeg_background,
            keep_metadata=self.keep_metadata,
            max_upload_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
            image_timeout_s=self.image_timeout_s,
        )

    def render_spec(
        self, presets_file: Path | None = None, formats: str | None = None
    ) -> RenderSpec:
        """The render spec these settings describe (CLI flags may override two parts)."""
        return self.render_settings().render_spec(presets_file, formats)


# An origin as browsers send it: scheme://host[:port], no path, no trailing slash.
_HOST_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST = rf"(\[[0-9a-f:.]+\]|{_HOST_LABEL}(\.{_HOST_LABEL})*)"
_ORIGIN = re.compile(rf"[a-z][a-z0-9+.-]*://{_HOST}(:(?P<port>[0-9]{{1,5}}))?")
URL_SIGNING_LABEL = b"pixelmill url signing"
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]*")


def parse_origins(value: str) -> tuple[str, ...]:
    """``"https://a.example, http://localhost:3000"`` -> the origins, lowercased; ``*`` alone
    allows any. Raises ValueError naming the first one that is not scheme://host[:port]."""
    origins: list[str] = []
    for item in (part.strip().lower() for part in value.split(",")):
        if not item or item in origins:
            continue
        match = _ORIGIN.fullmatch(item)
        port = match.group("port") if match else None
        if item != "*" and (match is None or (port is not None and not 0 < int(port) < 65536)):
            raise ValueError(f"{item[:60]!r} is not '*' or an origin scheme://host[:port]")
        # Browsers leave the scheme's own port out of Origin: so must the list, to match.
        for scheme, default in (("http", ":80"), ("https", ":443")):
            if item.startswith(f"{scheme}://") and item.endswith(default):
                item = item.removesuffix(default)
        if item not in origins:
            origins.append(item)
    return ("*",) if "*" in origins else tuple(origins)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad variable: its name, the value given, and what it accepts."""
    lines = []
    for problem in exc.errors():
        loc = problem.get("loc", ())
        field = str(loc[0]) if loc else "?"
        message = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
        variable = f"PIXELMILL_{field.upper()}"
        given = os.environ.get(variable)
        value = "" if given is None else f"={given[:60]!r}"
        if message[1:2].islower():  # "Input should be ..." reads on after the colon
            message = message[:1].lower() + message[1:]
        lines.append(f"{variable}{value} is not valid: {message}")
    return "; ".join(lines) or "invalid settings"


def load_settings(*, check_spec: bool = True, check_deployment: bool = True) -> Settings:
    """Settings from the environment (and, by default, the spec they describe), checked.

    The composition roots call this first, so a bad value stops the start with one line
    (ConfigError) instead of a traceback.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    if check_deployment:  # ``pixelmill run`` renders locally whatever the engine settings
        settings.check_deployment()
    if check_spec:
        try:
            settings.render_spec()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return settings


def get_settings() -> Settings:
    return Settings()
