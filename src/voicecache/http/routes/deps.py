"""Typed dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voicecache.cache.service import Gateway
from voicecache.settings import Settings

# `async def` on purpose: FastAPI runs plain `def` dependencies in its thread pool, which would
# cost every request three thread hops for three attribute reads.


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_tenant(request: Request) -> str | None:
    """The caller's tenant, set by authentication when keys are configured."""
    return getattr(request.state, "tenant", None)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TenantDep = Annotated[str | None, Depends(get_tenant)]
