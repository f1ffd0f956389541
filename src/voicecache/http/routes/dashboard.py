"""`GET /dashboard`: one self-contained page (inline CSS and JS, nothing fetched from the
internet) that polls `GET /dashboard/data` and draws what the cache saves."""

from __future__ import annotations

import os
import time
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from voicecache.http.routes.deps import ServicesDep
from voicecache.observability.state import engine_states, tier_rows

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
    """Everything the dashboard draws: counters (the same numbers as `/metrics`, summed over
    every worker process: `workers` says how many are running), hit ratio over time, latency
    percentiles and the most repeated and never-hit lines (these of the worker that answered,
    `pid`), tiers and engines."""
    metrics, gateway = services.metrics, services.gateway
    await metrics.refresh(gateway)
    state = metrics.current_state()
    breakers = engine_states(state)
    return {
        "generated_at": time.time(),
        "workers": metrics.workers,
        "pid": os.getpid(),
        "totals": metrics.totals(),
        "insights": metrics.insights.snapshot(),
        "tiers": tier_rows(state),
        "engines": {
            name: {"model_version": engine.model_version, **breakers.get(name, {"state": None})}
            for name, engine in gateway.engines.items()
        },
    }
