"""``/healthz`` and ``/metrics``: outside ``/v1``, so probes and scrapers need no key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pixelmill.api.deps import ServiceDep
from pixelmill.api.metrics import CONTENT_TYPE_LATEST
from pixelmill.api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Store reachable and workers alive",
    response_model=Health,
    responses={503: {"model": Health, "description": "A part is down: see reason"}},
)
async def healthz(service: ServiceDep) -> JSONResponse:
    report = await run_in_threadpool(service.healthy)
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(service: ServiceDep) -> Response:
    # In a thread: with the celery engine a scrape reads the shared store's counts.
    body = await run_in_threadpool(service.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
