"""Unknown query parameters are refused (400 ``invalid_request``), not silently ignored.

One dependency of the whole app compares a request's query string with what its route
declares (FastAPI's dependant, sub-dependencies included), so a new route is covered as
soon as it is written. A typo such as ``?wiat=true`` would otherwise do nothing, quietly.

Exceptions: the signed-URL parameters (``expires``, ``sig``) are taken everywhere, and the
operations of ``LENIENT_QUERY_OPERATIONS`` (manifests, renditions, metrics) ignore what they
do not know, so cache-busting strings work. Pages outside the OpenAPI document (``/docs``)
are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from pixelmill.api.schemas import LENIENT_QUERY_OPERATIONS, OPERATION_IDS
from pixelmill.errors import InvalidRequest

# The parameters of a signed URL (DESIGN.md): every route accepts them, in this shape only
# (ASCII digits; 64 lowercase hex digits), as /openapi.json documents them.
SIGNED_URL_SHAPES = {
    "expires": (re.compile(r"[0-9]{1,12}"), "Unix seconds, up to 12 ASCII digits"),
    "sig": (re.compile(r"[0-9a-f]{64}"), "64 lowercase hex digits"),
}
SIGNED_URL_PARAMETERS = frozenset(SIGNED_URL_SHAPES)
_SEQUENCES = (list, tuple, set, frozenset)


def _is_sequence(annotation: Any) -> bool:
    """A ``list[str]``-like type (also inside ``| None``): such a parameter may repeat."""
    if annotation in _SEQUENCES or get_origin(annotation) in _SEQUENCES:
        return True
    return any(_is_sequence(arg) for arg in get_args(annotation) if arg is not type(None))


def _query_fields(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    """(name, type) of every query parameter ``dependant`` reads, a model's fields one by one."""
    pending = [dependant]
    while pending:
        current = pending.pop()
        pending.extend(current.dependencies)
        for field in current.query_params:
            annotation = field.field_info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                for name, info in annotation.model_fields.items():
                    yield info.alias or name, info.annotation
            else:
                yield field.alias, annotation


def declared_query_parameters(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The query parameters ``route`` takes, and those of them that may be repeated."""
    fields = list(_query_fields(route.dependant))
    names = frozenset(name for name, _ in fields)
    repeatable = frozenset(name for name, annotation in fields if _is_sequence(annotation))
    return names, repeatable


# Text fields of the upload forms: sent in the query string by mistake, they get a hint.
FORM_FIELDS = frozenset({"presets", "formats", "callback_url"})


def refuse_malformed_signature_parameters(request: Request) -> None:
    """400 for ``expires`` or ``sig`` of another shape than a signed URL's. It runs after
    the key check: an unauthorised request is the signature check's to answer (401)."""
    for name, (shape, what) in SIGNED_URL_SHAPES.items():
        for value in request.query_params.getlist(name):
            if shape.fullmatch(value) is None:
                raise InvalidRequest(f"query parameter {name!r}: not {what}")


async def refuse_unknown_query_parameters(request: Request) -> None:
    """400 for a query parameter the route does not take, or a single one given twice, and
    on ``/v1`` for a signed URL's ``expires`` or ``sig`` of the wrong shape."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    if route.path.startswith("/v1/"):
        refuse_malformed_signature_parameters(request)
    operation_id = OPERATION_IDS.get((request.method.lower(), route.path))
    if operation_id in LENIENT_QUERY_OPERATIONS or not request.query_params:
        return
    declared, repeatable = declared_query_parameters(route)
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in declared and name not in SIGNED_URL_PARAMETERS:
            if name in FORM_FIELDS and request.method == "POST":
                raise InvalidRequest(
                    f"{name!r} is a form field of the upload, not a query parameter"
                )
            takes = ", ".join(sorted(declared))
            raise InvalidRequest(
                f"unknown query parameter {name[:64]!r} "
                + (f"(this route takes: {takes})" if takes else "(this route takes none)")
            )
        if name in seen and name not in repeatable:
            raise InvalidRequest(f"query parameter {name!r} is given more than once")
        seen.add(name)
