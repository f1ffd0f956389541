"""`GET /metrics`: Prometheus text exposition of the process's `Metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from voicecache.http.routes.deps import ServicesDep

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(services: ServicesDep) -> Response:
    """Counters, histograms and tier/engine state in Prometheus' text format."""
    await services.metrics.refresh(services.gateway)
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
