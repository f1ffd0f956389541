"""Administrative endpoints: `DELETE /admin/cache` purges cached audio by filter.

Access control for `/admin` is applied by path prefix elsewhere (the security layer); this
router only does the work.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.http.routes.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/admin", tags=["admin"])


@router.delete("/cache")
async def purge_cache(
    services: ServicesDep,
    principal: PrincipalDep,
    key: Annotated[str | None, Query(description="A cache key (optionally `.format`)")] = None,
    voice: Annotated[str | None, Query(description="Every entry of this voice")] = None,
    tag: Annotated[str | None, Query(description="Every entry carrying this tag")] = None,
    engine: Annotated[str | None, Query(description="Every entry of this engine")] = None,
    model_version: Annotated[
        str | None, Query(description="Every entry of a model version")
    ] = None,
    older_than: Annotated[str | None, Query(description="Created before, e.g. 7d")] = None,
    expired: Annotated[bool, Query(description="Entries past their TTL")] = False,
    all_entries: Annotated[bool, Query(alias="all", description="Everything")] = False,
) -> dict[str, Any]:
    """Remove cached audio matching every given filter from every tier.

    Answers the entries and bytes removed per tier. A call without any filter is refused
    with 400 (use `all=true` to empty the cache). Every other voicecache process drops its
    copies within `purge_poll_interval`."""
    flt = PurgeFilter.create(
        now=services.gateway.clock(),
        key=key,
        voice=voice,
        tag=tag,
        engine=engine,
        model_version=model_version,
        older_than=older_than,
        expired=expired,
        all_entries=all_entries,
    )
    report = await services.maintenance.purge(flt)
    services.audit.record("cache.purge", principal, filter=report.filter, entries=report.entries)
    return report.to_json()
