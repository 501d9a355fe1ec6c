"""The common ``pixelmill run`` command lines, parsed without Typer.

Typer coerces every option through a pydantic TypeAdapter: importing Typer and pydantic
and building the adapters took about a tenth of a second of each run, as long as all the
rest of the command's start-up. A command line made only of the options below, each given
once with a plain value, is parsed here. Anything else (help, an unknown or repeated
option, ``-oVALUE``, a value that looks like an option or is empty, a count that is not
plain digits) gives None and goes to Typer, which parses it, or says what is wrong,
exactly as before. tests/test_cli_startup.py checks that both read the same arguments.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pixelmill.run_command import Layout

# option -> (parameter of run_images, kind); "flag" takes no value.
_OPTIONS: dict[str, tuple[str, str]] = {
    "--out": ("out", "text"),
    "-o": ("out", "text"),
    "--workers": ("workers", "count"),
    "--report": ("report", "path"),
    "--presets": ("presets", "path"),
    "--formats": ("formats", "text"),
    "--quality": ("quality", "text"),
    "--layout": ("layout", "layout"),
    "--no-progress": ("no_progress", "flag"),
}
_PLAIN_COUNT = re.compile(r"[1-9][0-9]{0,5}")


def parse_run_args(args: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of ``run_images`` for ``pixelmill run ARGS``, or None when
    Typer must parse them (see the module docstring)."""
    parsed: dict[str, Any] = {}
    sources: list[str] = []
    pending = iter(args)
    for arg in pending:
        if not arg.startswith("-"):
            sources.append(arg)
            continue
        name, has_value, inline = arg.partition("=")
        if name not in _OPTIONS or (has_value and not name.startswith("--")):
            return None
        parameter, kind = _OPTIONS[name]
        if parameter in parsed:
            return None
        if kind == "flag":
            if has_value:
                return None
            parsed[parameter] = True
            continue
        value = inline if has_value else next(pending, None)
        if not value or value.startswith("-"):
            return None
        converted = _convert(kind, value)
        if converted is None:
            return None
        parsed[parameter] = converted
    if not sources or "out" not in parsed:
        return None
    return {"sources": sources, **parsed}


def _convert(kind: str, value: str) -> object | None:
    if kind == "count":
        return int(value) if _PLAIN_COUNT.fullmatch(value) else None
    if kind == "path":
        return Path(value)
    if kind == "layout":
        return Layout(value) if value in {layout.value for layout in Layout} else None
    return value
