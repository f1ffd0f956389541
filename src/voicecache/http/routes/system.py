"""Health: `GET /healthz` (voices moved to `routes/voices.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from voicecache.http.routes.deps import GatewayDep

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz(gateway: GatewayDep) -> dict[str, Any]:
    """Liveness and a summary of engines and tiers."""
    return {
        "status": "ok",
        "default_engine": gateway.default_engine,
        "engines": {
            name: {"model_version": engine.model_version, "state": getattr(engine, "state", "ok")}
            for name, engine in gateway.engines.items()
        },
        "tiers": [tier.name for tier in gateway.cache.tiers],
    }
