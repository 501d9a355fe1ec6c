"""Pieces both stores share: timestamps, counter deltas, JSON fields, argument checks."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pixelmill.states import ImageStatus
from pixelmill.store.base import StoreUnavailable

StoreClass = TypeVar("StoreClass", bound=type)

UNFINISHED_IMAGE_STATUSES = (ImageStatus.PENDING, ImageStatus.PROCESSING)

# Which batch counters a final image status adds one to ("pending" loses one each time).
COUNTERS_BY_FINAL_STATUS: dict[ImageStatus, tuple[str, ...]] = {
    ImageStatus.DONE: ("completed",),
    ImageStatus.DUPLICATE: ("completed", "duplicates"),
    ImageStatus.FAILED: ("failed",),
    ImageStatus.CANCELLED: ("cancelled",),
}


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. 2026-05-09T07:35:25.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def require_final(status: ImageStatus) -> ImageStatus:
    """``status`` as an ImageStatus, or ValueError when it is not a final one."""
    status = ImageStatus(status)
    if not status.is_final:
        raise ValueError(f"finish_image needs a final status, not {status.value!r}")
    return status


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def load_json(text: str | None) -> Any:
    return None if text is None or text == "" else json.loads(text)


def dump_choice(names: tuple[str, ...] | None) -> str | None:
    """A batch's choice of presets or formats as stored (None: the whole catalogue)."""
    return None if names is None else ",".join(names)


def load_choice(text: str | None) -> tuple[str, ...] | None:
    """The choice ``dump_choice`` stored (names never hold commas: they are identifiers)."""
    return None if text is None else tuple(name for name in text.split(",") if name)


def unavailable_on(*errors: type[BaseException]) -> Callable[[StoreClass], StoreClass]:
    """Class decorator: ``errors`` raised by a public method become ``StoreUnavailable``.

    So callers (the API) tell "the store is down or full" from a bug without importing
    redis or sqlite3.
    """

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def translated(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except errors as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

        return translated

    def decorate(cls: StoreClass) -> StoreClass:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(member) and name != "close":
                setattr(cls, name, wrap(member))
        return cls

    return decorate
