"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tradeguard.service.auth import ReadMarket

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: 503 until every tracked pair has fresh data",
    responses={503: {"description": "some sources are stale; the body names them"}},
)
async def ready(request: Request, _: ReadMarket) -> JSONResponse:
    engine = request.app.state.engine
    stale = engine.stale_sources()
    now = engine.now()
    body = {
        "ready": not stale,
        "stale_sources": stale,
        "sources": [s.as_dict(now) for s in engine.statuses()],
    }
    return JSONResponse(body, status_code=503 if stale else 200)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, _: ReadMarket) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
