"""``/v1/batches``: create (multipart upload), list, status, progress events, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pixelmill.api import erase
from pixelmill.api.deps import ServiceDep, SignerDep, checked_id
from pixelmill.api.events import batch_events, done_event_id, parse_last_event_id
from pixelmill.api.routes._upload import multipart_openapi, read_upload
from pixelmill.api.schemas import (
    BatchAccepted,
    BatchList,
    BatchOut,
    error_responses,
    event_stream_response,
)
from pixelmill.api.service import new_id
from pixelmill.api.signing import signed_urls
from pixelmill.api.webhooks import validate_callback_url
from pixelmill.errors import InvalidRequest
from pixelmill.store.base import InvalidCursor

# Malformed expires or sig: 400, checked after the API key (without it, 401 comes first).
router = APIRouter(
    prefix="/v1/batches",
    tags=["batches"],
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# What next_cursor looks like (``<created_at>_<batch_id>``); clients pass it back unchanged.
# [0-9], not \d: \d takes the digits of every script where the pattern is checked.
CURSOR_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z_[0-9a-f]{32}$"


def batch_url(batch_id: str) -> str:
    return f"/v1/batches/{batch_id}"


@router.post(
    "",
    status_code=202,
    summary="Upload images as a new batch",
    response_model=BatchAccepted,
    responses=error_responses(400, 401, 408, 413, 503, 507),
    openapi_extra=multipart_openapi("files", many=True, text_fields=("callback_url",)),
)
async def create_batch(request: Request, service: ServiceDep, signer: SignerDep) -> JSONResponse:
    """Spool every ``files`` part and answer at once; rendering goes on in the background."""
    batch_id = new_id()
    form = await read_upload(
        request, service, batch_id, file_field="files", text_fields=frozenset({"callback_url"})
    )
    try:
        callback_url = form.fields.get("callback_url", "").strip() or None
        if callback_url is not None:
            callback_url = validate_callback_url(callback_url)
    except BaseException:
        form.discard()
        raise
    record = await run_in_threadpool(
        service.create_batch, batch_id, form, callback_url, form.choice
    )
    body = BatchAccepted(
        batch_id=batch_id,
        status=record.status.value,
        total=record.total,
        status_url=batch_url(batch_id),
        events_url=f"{batch_url(batch_id)}/events",
    )
    return JSONResponse(signed_urls(signer, body.model_dump()), status_code=202)


@router.get(
    "/{batch_id}",
    summary="Batch status with per-image records",
    response_model=BatchOut,
    responses=error_responses(401, 404, 503),
)
async def get_batch(batch_id: str, service: ServiceDep, signer: SignerDep) -> JSONResponse:
    record = await run_in_threadpool(service.get_batch, checked_id(batch_id, "batch"))
    return JSONResponse(signed_urls(signer, record.as_api_dict()))


STREAM_OVER = (
    "The stream already ended with its done event (the Last-Event-ID sent): nothing more "
    "comes, and a browser's EventSource stops reconnecting"
)


@router.get(
    "/{batch_id}/events",
    summary="Progress as Server-Sent Events (progress, image, done)",
    response_class=StreamingResponse,
    responses={
        **event_stream_response(),
        204: {"description": STREAM_OVER},
        **error_responses(401, 404, 503),
    },
)
async def batch_events_stream(
    batch_id: str, request: Request, service: ServiceDep, signer: SignerDep
) -> Response:
    # Look the batch up first, so an unknown id is a plain 404, not an event stream.
    record = await run_in_threadpool(
        service.get_batch, checked_id(batch_id, "batch"), include_images=False
    )
    # Sent back by a reconnecting EventSource: resume after that event, replay nothing.
    last_event_id = parse_last_event_id(request.headers.get("last-event-id"))
    if record.is_finished and last_event_id == done_event_id(record):
        # The client saw done; a 204 is what makes a browser's EventSource stop for good.
        return Response(status_code=204)
    return StreamingResponse(
        batch_events(service.store, batch_id, request.app.state.sse_limiter, last_event_id, signer),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/{batch_id}/cancel",
    status_code=202,
    summary="Cancel a batch (idempotent)",
    response_model=BatchOut,
    responses=error_responses(401, 404, 503),
)
async def cancel_batch(batch_id: str, service: ServiceDep, signer: SignerDep) -> JSONResponse:
    """No image of the batch starts after this answers; running ones stop soon after."""
    record = await run_in_threadpool(service.cancel_batch, checked_id(batch_id, "batch"))
    return JSONResponse(signed_urls(signer, record.as_api_dict()), status_code=202)


@router.get(
    "",
    summary="Batches, newest first, a page at a time (keyset cursor)",
    response_model=BatchList,
    responses=error_responses(400, 401, 503),
)
async def list_batches(
    service: ServiceDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Batches per page.")
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR_PATTERN, description="The previous page's next_cursor.")
    ] = None,
) -> JSONResponse:
    """A batch created while a client pages never makes a later page repeat or skip one."""
    try:
        batches, next_cursor = await run_in_threadpool(service.store.list_batches, limit, cursor)
    except InvalidCursor:
        raise InvalidRequest("cursor: not a cursor this service handed out") from None
    body = {
        "batches": [batch.as_api_dict(include_images=False) for batch in batches],
        "next_cursor": next_cursor,
    }
    return JSONResponse(body)


@router.delete(
    "/{batch_id}",
    status_code=204,
    summary="Forget a batch (cancelled first if running); its renditions stay",
    response_class=Response,
    responses=error_responses(401, 404, 503),
)
async def delete_batch(batch_id: str, service: ServiceDep) -> Response:
    """Its status, images and events go; no image of it starts after this answers."""
    await run_in_threadpool(erase.delete_batch, service, checked_id(batch_id, "batch"))
    return Response(status_code=204)
