"""``/v1/images``: upload one image (optionally waiting), manifests, rendition files, erase."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from pixelmill.api import erase
from pixelmill.api.deps import ServiceDep, SignerDep
from pixelmill.api.errors import echoed, error_response
from pixelmill.api.routes._stored import StreamedRendition
from pixelmill.api.routes._upload import multipart_openapi, read_upload
from pixelmill.api.routes.batches import batch_url
from pixelmill.api.schemas import (
    MANIFEST_RESPONSES,
    RENDITION_RESPONSES,
    ImageAccepted,
    ImageWaited,
    Manifest,
    error_responses,
)
from pixelmill.api.service import new_id
from pixelmill.api.signing import signed_urls
from pixelmill.errors import ErrorCode, InvalidRequest, NotFound
from pixelmill.storage import SHA256_PATTERN, rendition_url
from pixelmill.storage.base import IMMUTABLE, MEDIA_TYPES, listed_files

# Malformed expires or sig: 400, checked after the API key (without it, 401 comes first).
router = APIRouter(
    prefix="/v1/images",
    tags=["images"],
)

MAX_WAIT_S = 300.0


def _checked_sha(sha256: str) -> str:
    if not SHA256_PATTERN.fullmatch(sha256):
        raise NotFound(f"no image {echoed(sha256)} (image ids are SHA-256 hex digests)")
    return sha256


def _etag_matches(request: Request, etag: str) -> bool:
    given = request.headers.get("if-none-match", "")
    return any(tag.strip() in (etag, "*", f"W/{etag}") for tag in given.split(","))


@router.post(
    "",
    summary="Upload one image; ?wait=true answers with its record when it is finished",
    responses={
        200: {"model": ImageWaited, "description": "The image's record (waited and finished)"},
        202: {"model": ImageAccepted, "description": "Accepted; rendering goes on"},
        # 404: with ?wait=true, the batch was deleted during the wait.
        **error_responses(400, 401, 404, 408, 413, 503, 507),
    },
    openapi_extra=multipart_openapi("file", many=False),
)
async def upload_image(
    request: Request,
    service: ServiceDep,
    signer: SignerDep,
    wait: bool = False,
    timeout: Annotated[float, Query(gt=0, le=MAX_WAIT_S, description="Seconds to wait.")] = 30.0,
) -> JSONResponse:
    batch_id = new_id()
    form = await read_upload(request, service, batch_id, file_field="file", also_file_field="files")
    if len(form.files) != 1:
        form.discard()
        raise InvalidRequest("send exactly one 'file' part (use /v1/batches for several)")
    image_id = form.files[0].image_id
    await run_in_threadpool(service.create_batch, batch_id, form, None, form.choice)
    if wait:
        image = await anyio.to_thread.run_sync(
            service.wait_for_image,
            batch_id,
            image_id,
            timeout,
            limiter=request.app.state.wait_limiter,
        )
        if image.status.is_final:
            return JSONResponse(signed_urls(signer, {"batch_id": batch_id, **image.as_api_dict()}))
    accepted = ImageAccepted(batch_id=batch_id, image_id=image_id, status_url=batch_url(batch_id))
    return JSONResponse(signed_urls(signer, accepted.model_dump()), status_code=202)


@router.get(
    "/{sha256}",
    summary="An image's manifest: source facts, renditions (as URLs), timings",
    response_model=Manifest,
    responses=MANIFEST_RESPONSES,
)
async def get_manifest(
    sha256: str, request: Request, service: ServiceDep, signer: SignerDep
) -> Response:
    manifest = await run_in_threadpool(service.storage.read_manifest, _checked_sha(sha256))
    if manifest is None:
        raise NotFound(f"no renditions for {sha256}")
    renditions = manifest.get("renditions")
    for rendition in renditions if isinstance(renditions, list) else ():
        if isinstance(rendition, dict) and isinstance(rendition.get("path"), str):
            rendition["path"] = rendition_url(sha256, rendition["path"])
    body = json.dumps(signed_urls(signer, manifest), separators=(",", ":")).encode()
    # A manifest can grow (new presets add renditions): revalidate, but cheaply.
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


router.add_api_route(
    "/{sha256}",
    get_manifest,
    methods=["HEAD"],
    summary="An image's manifest headers (ETag), without the body",
    response_class=Response,
    responses=MANIFEST_RESPONSES,
)


@router.get(
    "/{sha256}/{filename}",
    summary="One rendition's bytes, e.g. large.webp (HEAD too)",
    response_class=FileResponse,
    responses=RENDITION_RESPONSES,
)
async def get_rendition(
    sha256: str, filename: str, request: Request, service: ServiceDep
) -> Response:
    """Only what the image's manifest lists is served, from a folder or a bucket alike."""
    extension = filename.rpartition(".")[2]
    if extension not in MEDIA_TYPES:
        raise NotFound(f"no rendition {echoed(filename)}")
    storage = service.storage
    sha256 = _checked_sha(sha256)
    public = storage.public_url(sha256, filename)
    if public is not None:
        manifest = await run_in_threadpool(storage.read_manifest, sha256)
        if manifest is None or filename not in (listed_files(manifest) or ()):
            raise NotFound(f"no rendition {echoed(filename)} of {sha256}")
        return Response(status_code=307, headers={"Location": public})
    stored = await run_in_threadpool(storage.open_rendition, sha256, filename)
    if stored is None:
        raise NotFound(f"no rendition {echoed(filename)} of {sha256}")
    size = stored.size
    headers = {"ETag": stored.etag, "Cache-Control": IMMUTABLE}
    if _etag_matches(request, stored.etag):
        return Response(status_code=304, headers=headers)
    media_type = MEDIA_TYPES[extension]
    if stored.path is not None:  # a file: Starlette serves it (ranges, HEAD) as before
        response: Response = FileResponse(stored.path, media_type=media_type, headers=headers)
    else:
        response = StreamedRendition(stored, media_type, headers)
    wanted = request.headers.get("range")
    if wanted is not None:
        # Starlette answers a bad Range in plain text: check it first, for our error shape.
        try:
            FileResponse._parse_range_header(wanted, size)
        except MalformedRangeHeader:
            raise InvalidRequest(f"malformed Range header {wanted[:80]!r}") from None
        except RangeNotSatisfiable:
            return error_response(
                ErrorCode.INVALID_REQUEST,
                f"the range is outside the file's {size} bytes",
                status=416,
                headers={"Content-Range": f"bytes */{size}"},
            )
    return response


# HEAD answers what GET would (status and headers), without the body (uvicorn drops it).
router.add_api_route(
    "/{sha256}/{filename}",
    get_rendition,
    methods=["HEAD"],
    summary="One rendition's headers (type, length, ETag), without the bytes",
    response_class=Response,
    responses=RENDITION_RESPONSES,
)


@router.delete(
    "/{sha256}",
    status_code=204,
    summary="Erase an image's renditions and manifest; the same bytes uploaded later render anew",
    response_class=Response,
    responses=error_responses(401, 404, 409, 503),
)
async def delete_image(sha256: str, service: ServiceDep) -> Response:
    """409 while the same content is being rendered (retry once it is finished)."""
    await run_in_threadpool(erase.delete_image, service, _checked_sha(sha256))
    return Response(status_code=204)
