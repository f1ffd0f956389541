"""`GET /dashboard`: one self-contained page (inline CSS and JS, nothing fetched from the
internet) that polls `GET /dashboard/data` and draws what the cache saves."""

from __future__ import annotations

import time
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from voicecache.http.routes.deps import ServicesDep

router = APIRouter(tags=["observability"])


@cache
def _page() -> str:
    return files("voicecache.http").joinpath("static/dashboard.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/data")
async def dashboard_data(services: ServicesDep) -> dict[str, Any]:
    """Everything the dashboard draws: counters (the same numbers as `/metrics`), hit ratio
    over time, latency percentiles, tiers, engines, most repeated and never-hit lines."""
    metrics, gateway = services.metrics, services.gateway
    await metrics.refresh(gateway)
    state = metrics.state
    return {
        "generated_at": time.time(),
        "totals": metrics.totals(),
        "insights": metrics.insights.snapshot(),
        "tiers": [
            {
                "name": stats.name,
                "entries": stats.entries,
                "bytes": stats.bytes,
                "capacity_bytes": stats.capacity_bytes,
                "evictions": stats.evictions,
                "errors": max(stats.errors, state.tier_errors.get(stats.name, 0)),
            }
            for stats in state.tiers
        ],
        "engines": {
            name: {
                "model_version": engine.model_version,
                "state": state.engine_states.get(name),
            }
            for name, engine in gateway.engines.items()
        },
    }
