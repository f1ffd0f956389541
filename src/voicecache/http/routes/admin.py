"""Administrative endpoints: `DELETE /admin/cache` purges cached audio by filter.

Access control for `/admin` is applied by path prefix elsewhere (the security layer); this
router only does the work.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.http.routes.deps import GatewayDep

router = APIRouter(prefix="/admin", tags=["admin"])


@router.delete("/cache")
async def purge_cache(
    request: Request,
    gateway: GatewayDep,
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
        now=gateway.clock(),
        key=key,
        voice=voice,
        tag=tag,
        engine=engine,
        model_version=model_version,
        older_than=older_than,
        expired=expired,
        all_entries=all_entries,
    )
    report = await request.app.state.maintenance.purge(flt)
    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        audit.record(
            "cache.purge",
            getattr(request.state, "principal", None),
            filter=report.filter,
            entries=report.entries,
        )
    return report.to_json()
