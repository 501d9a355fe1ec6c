"""The upload step both upload routes share: size checks, streaming parse, spool folder."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Request
from starlette.requests import ClientDisconnect

from pixelmill.api.errors import close_after_answer
from pixelmill.api.service import BatchService
from pixelmill.api.uploads import (
    MAX_TEXT_FIELD_BYTES,
    BodyPace,
    UploadForm,
    UploadTimeout,
    multipart_boundary,
    receive_upload,
)
from pixelmill.api.webhooks import AddressPolicy, validate_callback_url
from pixelmill.core.specs import OutputFormat, RenderSpec
from pixelmill.engine.base import Choice
from pixelmill.errors import FileTooLarge, InvalidRequest, PixelmillError

# After an early refusal, read and drop up to this much of the body so the client, still
# sending, gets the answer instead of a reset; past it, answer and close the connection.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# A callback host that takes longer than this to resolve is refused (400).
RESOLVE_TIMEOUT_S = 10.0
# The optional form fields choosing renditions from the catalogue, on both upload routes.
CHOICE_FIELDS = ("presets", "formats")
# Another name a format is known by: a file extension.
FORMAT_ALIASES = {"jpg": "jpeg"}
UPLOAD_PATHS = ("/v1/batches", "/v1/images")
# What the document says of a text field beyond its length, by name.
TEXT_FIELD_SCHEMAS: dict[str, dict[str, object]] = {
    "callback_url": {
        "format": "uri",
        # An absolute http(s) URL: a host (a name, or an address; IPv6 in brackets), an
        # optional port, then a path, query or fragment.
        "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://([^\s/?#@\[\]]+@)?"
        r"([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
        r"(:[0-9]{1,5})?([/?#]\S*)?$",
        "description": "An absolute http:// or https:// URL, POSTed the batch's final status "
        "when it finishes.",
    },
}


def multipart_openapi(
    file_field: str, many: bool, text_fields: tuple[str, ...] = ()
) -> dict[str, object]:
    """The request body as OpenAPI sees it (the route parses the stream itself)."""
    binary: dict[str, object] = {"type": "string", "format": "binary"}
    properties: dict[str, object] = {
        file_field: {"type": "array", "items": binary, "minItems": 1} if many else binary
    }
    for name in text_fields:
        properties[name] = {
            "type": "string",
            "maxLength": MAX_TEXT_FIELD_BYTES,
            **TEXT_FIELD_SCHEMAS.get(name, {}),
        }
    properties["presets"] = {
        "type": "string",
        "description": "Comma-separated presets of the catalogue (GET /v1/presets); "
        "default: all of them.",
        "maxLength": MAX_TEXT_FIELD_BYTES,
    }
    properties["formats"] = {
        "type": "string",
        "description": "Comma-separated formats among jpeg (or jpg), webp, avif, png; "
        "default: the catalogue's.",
        "maxLength": MAX_TEXT_FIELD_BYTES,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": [file_field],
                        # Unknown fields are refused (400), not ignored.
                        "additionalProperties": False,
                    }
                }
            },
        }
    }


async def read_upload(
    request: Request,
    service: BatchService,
    batch_id: str,
    *,
    file_field: str,
    text_fields: frozenset[str] = frozenset(),
    also_file_field: str | None = None,
) -> UploadForm:
    """Spool the request's files under the batch's spool folder; at least one file.

    ``presets`` and ``formats`` are taken on top of ``text_fields`` and checked against
    the catalogue: the form's ``choice`` is what the request asked for. Files come in
    ``file_field`` parts (or ``also_file_field`` ones, where a route takes both names).
    """
    settings = service.settings
    if request.headers.get("expect", "").lower() == "100-continue":
        try:
            _refuse_by_headers(request, settings.max_batch_bytes)
        except PixelmillError:
            # Answered before "100 Continue": the client sends no body, nothing to drain.
            close_after_answer(request)
            raise
    stream = request.stream()
    try:
        _refuse_by_headers(request, settings.max_batch_bytes)
        form = await receive_upload(
            stream,
            request.headers.get("content-type"),
            service.spool_dir(batch_id),
            file_fields=frozenset({file_field, also_file_field or file_field}),
            text_fields=text_fields | frozenset(CHOICE_FIELDS),
            max_file_bytes=settings.max_upload_bytes,
            max_body_bytes=settings.max_batch_bytes,
            max_files=settings.max_files_per_batch,
            chunk_timeout_s=settings.client_timeout_s,
        )
    except ClientDisconnect:
        # Nobody is left to answer; say so in the usual shape rather than log a traceback.
        raise InvalidRequest("the client went away before the upload ended") from None
    except UploadTimeout:
        close_after_answer(request)
        raise
    except PixelmillError:
        if not await _drain(stream, settings.client_timeout_s):
            close_after_answer(request)
        raise
    if not form.files:
        form.discard()
        raise InvalidRequest(f"send one or more images as {file_field!r} parts")
    try:
        form.choice = parse_choice(form.fields)
        service.chosen.choice(form.choice)  # a name outside the catalogue: 400
        await _check_callback_address(form, AddressPolicy(settings.webhook_allow_private))
    except ValueError as exc:
        form.discard()
        raise InvalidRequest(str(exc)) from None
    except BaseException:
        form.discard()
        raise
    return form


def _list_pattern(names: list[str]) -> str:
    """A regular expression for a comma-separated list of ``names`` (spaces around items)."""
    one = "(" + "|".join(re.escape(name) for name in names) + ")"
    return rf"^\s*{one}(\s*,\s*{one})*\s*$"


def describe_choice_fields(schema: dict[str, Any], catalogue: RenderSpec) -> dict[str, Any]:
    """The OpenAPI document with the upload routes' ``presets`` and ``formats`` narrowed to
    what this service's catalogue takes (a presets file changes the names)."""
    presets = [preset.name for preset in catalogue.presets]
    formats = [fmt.value for fmt in OutputFormat] + list(FORMAT_ALIASES)
    for path in UPLOAD_PATHS:
        operation = schema.get("paths", {}).get(path, {}).get("post", {})
        content = operation.get("requestBody", {}).get("content", {})
        properties = content.get("multipart/form-data", {}).get("schema", {}).get("properties")
        if not properties:
            continue
        properties["presets"] |= {"pattern": _list_pattern(presets), "examples": [presets[0]]}
        properties["formats"] |= {"pattern": _list_pattern(formats), "examples": ["webp"]}
    return schema


def parse_choice(fields: dict[str, str]) -> Choice:
    """The ``presets`` and ``formats`` form fields as names (None: not given), or
    InvalidRequest for an empty item. Whether the catalogue has them is checked after."""
    chosen: list[tuple[str, ...] | None] = []
    for name in CHOICE_FIELDS:
        text = fields.get(name)
        if text is None:
            chosen.append(None)
            continue
        items = [item.strip() for item in text.split(",")]
        if not all(items):
            raise InvalidRequest(f"{name} is a comma-separated list without empty items")
        if name == "formats":
            items = [FORMAT_ALIASES.get(item, item) for item in items]
        chosen.append(tuple(dict.fromkeys(items)))
    return chosen[0], chosen[1]


def _refuse_by_headers(request: Request, max_body_bytes: int) -> None:
    """Refuse a body its headers already rule out: too long, or not multipart."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body_bytes:
        raise FileTooLarge(f"the request body is over {max_body_bytes} bytes")
    multipart_boundary(request.headers.get("content-type"))


async def _check_callback_address(form: UploadForm, policy: AddressPolicy) -> None:
    """Refuse a ``callback_url`` whose host resolves to an address the policy forbids."""
    url = form.fields.get("callback_url", "").strip()
    if not url:
        return
    validate_callback_url(url)
    try:
        with anyio.fail_after(RESOLVE_TIMEOUT_S):
            await anyio.to_thread.run_sync(policy.resolve, url, abandon_on_cancel=True)
    except TimeoutError:
        raise InvalidRequest("callback_url host did not resolve in time") from None


async def _drain(stream: AsyncIterator[bytes], chunk_timeout_s: float) -> bool:
    """Read and drop the rest of a refused body, within bounds (bytes, and the pace of an
    upload: a dripping client is not waited for); True when it ended."""
    dropped = 0
    pace = BodyPace(chunk_timeout_s)
    try:
        while dropped <= DRAIN_LIMIT_BYTES:
            with anyio.fail_after(pace.next_wait(dropped)):
                chunk = await anext(stream)
            dropped += len(chunk)
    except StopAsyncIteration:
        return True
    except (TimeoutError, ClientDisconnect):
        pass
    return False
