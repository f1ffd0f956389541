"""Explicit invalidation: remove cached audio by key, voice, tag, engine, model version, age,
expiry, or all of it, from every tier, and report what went from each.

`purge(cache, PurgeFilter(...))` is shared by `DELETE /admin/cache`, `voicecache purge` and
voice erasure; the background sweeper uses `purge_tier` with its own scope. A purge announces
itself to the `TieredCache` (`begin_purge`/`end_purge`), which fences concurrent traffic: from
the first moment of a purge its entries are not served, and no promotion, touch or engine fill
that raced it can store them again (see `tiers/tiered.py`).

How a tier is searched, cheapest first:

- by key: the key's few storage ids (one per format) are deleted directly, no search;
- any other filter, and sweeps: the tier's own index, `tier.delete_matching(scope)` (the disk
  tier's SQLite index; Redis, and S3 with Redis, keep one in Redis: `tiers/index.py`), which
  finds and deletes matches without reading entries, or returns None when it cannot answer;
- by voice or tag: the tier's optional secondary index, `tier.find(voice=..., tag=...)`
  (Redis keeps one), which returns matching ids, or None for "not indexed";
- otherwise a `scan()` of the tier's headers, deleting matches as it goes and yielding to the
  event loop regularly so requests keep flowing.

In the memory tier a match is re-checked and deleted with no await in between. In the other
tiers, an entry re-stored under the same id between the scan and the delete, with a header
the filter does not cover (possible only for tag, age and expiry filters, since the id fixes
voice, engine and model version), may be deleted too: it costs one re-synthesis, never a
wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.tiers.disk import DiskTier
from voicecache.cache.tiers.memory import MemoryTier
from voicecache.cache.tiers.tiered import PurgeScope, TieredCache
from voicecache.codecs import FORMATS
from voicecache.model import Tier

log = logging.getLogger(__name__)

_BATCH = 64  # deletes in flight per tier, and entries scanned between yields to the loop


def tier_identity(tier: Tier) -> str:
    """A name that is equal for two tier objects exactly when they hold the same entries."""
    if isinstance(tier, MemoryTier):
        return f"memory:{os.getpid()}:{id(tier)}"
    if isinstance(tier, DiskTier):
        return f"disk:{socket.gethostname()}:{tier.root.resolve()}"
    url, prefix, bucket = (getattr(tier, name, None) for name in ("url", "prefix", "bucket"))
    if bucket is not None:
        return f"{tier.name}:{bucket}:{prefix}"
    if url is not None:
        return f"{tier.name}:{url}:{prefix}"
    return f"{tier.name}:{os.getpid()}:{id(tier)}"


@dataclass(slots=True)
class TierPurge:
    """What one purge removed from one tier."""

    entries: int = 0
    bytes: int = 0
    error: str | None = None


@dataclass(slots=True)
class PurgeReport:
    """Entries and bytes removed per tier (tiers in cache order)."""

    tiers: dict[str, TierPurge] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return sum(tier.entries for tier in self.tiers.values())

    @property
    def bytes(self) -> int:
        return sum(tier.bytes for tier in self.tiers.values())

    @property
    def errors(self) -> dict[str, str]:
        return {name: tier.error for name, tier in self.tiers.items() if tier.error is not None}

    def counts(self) -> dict[str, dict[str, int]]:
        """Entries, bytes and errors (0 or 1) per tier."""
        return {
            name: {"entries": r.entries, "bytes": r.bytes, "errors": int(r.error is not None)}
            for name, r in self.tiers.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "filter": self.filter,
            "tiers": {
                name: {"entries": tier.entries, "bytes": tier.bytes}
                for name, tier in self.tiers.items()
            },
            "entries": self.entries,
            "bytes": self.bytes,
            "errors": self.errors,
        }


async def purge(
    cache: TieredCache,
    flt: PurgeFilter,
    *,
    tiers: Sequence[Tier] | None = None,
    announce: bool = True,
) -> PurgeReport:
    """Remove every entry `flt` covers from every tier of `cache` (or only from `tiers`),
    then announce the purge to other processes (when the cache has an announcer)."""
    chosen = cache.tiers if tiers is None else list(tiers)
    report = PurgeReport(filter={"all": True} if flt.all else flt.conditions())
    record = cache.begin_purge(flt)
    try:
        results = await asyncio.gather(*(purge_tier(tier, flt) for tier in chosen))
    finally:
        cache.end_purge(record)
    for tier, result in zip(chosen, results, strict=True):
        report.tiers[tier.name] = result
        if result.error is not None:
            cache.errors[tier.name] = cache.errors.get(tier.name, 0) + 1
    log.info("purge %s removed %d entries, %d bytes", report.filter, report.entries, report.bytes)
    if announce and cache.announcer is not None:
        await cache.announcer(flt, [tier for tier in chosen if tier.name not in report.errors])
    return report


async def purge_tier(tier: Tier, scope: PurgeScope) -> TierPurge:
    """Remove the entries `scope` covers from one tier; a tier failure is reported, not raised."""
    result = TierPurge()
    try:
        if isinstance(scope, PurgeFilter) and scope.key is not None:
            await _delete_ids(tier, _key_ids(scope.key), result)
            return result
        removed = await tier.delete_matching(scope)  # the tier's index answers the scope
        if removed is not None:
            result.entries, result.bytes = removed
            return result
        if isinstance(scope, PurgeFilter):
            lookups = scope.index_lookups()
            if lookups is not None:
                ids = await _find(tier, lookups)
                if ids is not None:
                    await _delete_ids(tier, ids, result)
                    return result
        await _scan_and_delete(tier, scope, result)
    except Exception as exc:  # a broken tier must not hide what the others removed
        log.warning("purge of tier %s failed: %s", tier.name, exc)
        result.error = str(exc) or type(exc).__name__
    return result


def _key_ids(key: str) -> list[str]:
    if "." in key:
        return [key]
    return [f"{key}.{fmt}" for fmt in FORMATS]


async def _find(tier: Tier, lookups: dict[str, str]) -> list[str] | None:
    """Ids from the tier's secondary index (`Tier.find`), or None when it has none."""
    return await tier.find(**lookups)


async def _delete_ids(tier: Tier, ids: list[str], result: TierPurge) -> None:
    for start in range(0, len(ids), _BATCH):
        freed = await asyncio.gather(*(tier.delete(i) for i in ids[start : start + _BATCH]))
        _count(freed, result)


async def _scan_and_delete(tier: Tier, scope: PurgeScope, result: TierPurge) -> None:
    pending: list[Awaitable[int]] = []
    seen = 0
    async for entry_id, meta in tier.scan():
        seen += 1
        if scope.matches(entry_id, meta):
            if isinstance(tier, MemoryTier):
                # Check and delete with no await in between: a newer entry stored under the
                # same id since the scan (with a header the scope does not cover) is kept.
                current = tier.header(entry_id)
                if current is not None and scope.matches(entry_id, current):
                    _count([tier.remove(entry_id)], result)
            else:
                pending.append(tier.delete(entry_id))
        if len(pending) >= _BATCH or (seen % _BATCH == 0):
            await _flush(pending, result)
            await asyncio.sleep(0)  # let requests run between batches
    await _flush(pending, result)


async def _flush(pending: list[Awaitable[int]], result: TierPurge) -> None:
    if not pending:
        return
    freed = await asyncio.gather(*pending)
    pending.clear()
    _count(freed, result)


def _count(freed: Sequence[int], result: TierPurge) -> None:
    for size in freed:
        if size > 0:
            result.entries += 1
            result.bytes += size
