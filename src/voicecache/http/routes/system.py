"""System routes: `GET /` (to the dashboard) and OpenAI's `GET /v1/models` (the engines).

Health and readiness (`/healthz`, `/readyz`) live in `routes/health.py`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from voicecache.http.routes.deps import GatewayDep

router = APIRouter(tags=["system"])


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    """People who open the bare address land on the dashboard."""
    return RedirectResponse("/dashboard", status_code=307)


class ModelOut(BaseModel):
    """One engine, as OpenAI describes a model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "voicecache"


class ModelListOut(BaseModel):
    """OpenAI's model list."""

    object: Literal["list"] = "list"
    data: list[ModelOut]


@router.get("/v1/models")
async def list_models(gateway: GatewayDep) -> ModelListOut:
    """The engines, in OpenAI's model-list shape (OpenAI-style clients ask for it). A name
    here selects that engine as `model` on `/v1/audio/speech`; any other model name uses
    the default engine, which is listed first."""
    names = sorted(gateway.engines, key=lambda name: (name != gateway.default_engine, name))
    return ModelListOut(data=[ModelOut(id=name) for name in names])
