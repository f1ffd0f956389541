"""Liveness and readiness for load balancers and orchestrators: `GET /healthz`, `GET /readyz`.

Both are public (no API key) and thin over `observability/health.py`. `/healthz` always
answers 200 while the process runs, with `"status": "degraded"` and the failing tiers and
engines (their breaker states) when something is down; `/readyz` answers 503 while no tier can
serve and the default engine cannot be reached, so an orchestrator stops sending traffic.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from voicecache.http.routes.deps import GatewayDep
from voicecache.observability.health import health, readiness

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz(gateway: GatewayDep) -> dict[str, Any]:
    """Liveness (always 200), with every tier's and engine's circuit state."""
    return health(gateway)


@router.get("/readyz", responses={503: {"description": "No tier can serve, no engine answers"}})
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """Readiness: 200 when some tier can serve or the default engine can be reached, else
    503."""
    state = await readiness(gateway)
    return JSONResponse(state.to_json(), status_code=200 if state.ready else 503)
