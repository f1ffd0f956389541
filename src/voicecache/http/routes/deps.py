"""Typed dependencies shared by the routes: the process's parts, read through `http/state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voicecache.bootstrap import Services
from voicecache.cache.service import Gateway
from voicecache.http.state import services_of
from voicecache.security.auth import ANONYMOUS, Principal
from voicecache.settings import Settings

# `async def` on purpose: FastAPI runs plain `def` dependencies in its thread pool, which would
# cost every request a thread hop for an attribute read.


async def get_services(request: Request) -> Services:
    return services_of(request.scope)


async def get_gateway(request: Request) -> Gateway:
    return services_of(request.scope).gateway


async def get_settings(request: Request) -> Settings:
    return services_of(request.scope).settings


async def get_principal(request: Request) -> Principal:
    """The caller, as authenticated by the security middleware (anonymous without keys)."""
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else ANONYMOUS


async def get_tenant(request: Request) -> str | None:
    """The caller's tenant, set by authentication when keys are configured."""
    tenant = request.scope.get("state", {}).get("tenant")
    return tenant if isinstance(tenant, str) else None


ServicesDep = Annotated[Services, Depends(get_services)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
TenantDep = Annotated[str | None, Depends(get_tenant)]
