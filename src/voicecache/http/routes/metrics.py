"""`GET /metrics`: Prometheus text exposition of the gateway's `Metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from voicecache.errors import NotFound
from voicecache.http.routes.deps import GatewayDep
from voicecache.observability.metrics import metrics_of

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(gateway: GatewayDep) -> Response:
    """Counters, histograms and tier/engine state in Prometheus' text format."""
    metrics = metrics_of(gateway)
    if metrics is None:
        raise NotFound("metrics are not enabled for this gateway")
    await metrics.refresh(gateway)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
