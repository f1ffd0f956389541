"""The lookup: a planned request answered from the cache when it can be, a miss handed on.

Cheapest first: the memory tier, synchronously (`Gateway.memory_hit`, the fast lane's whole
lookup); then the slower tiers, under one coalescing id per variant, so that identical requests
share the lookup as well as the fill (a herd of thousands must not open thousands of Redis
connections at once). A fresh entry is a HIT; a stale one is served at once and refreshed in
the background with `stale_while_revalidate` (`refresh.py`), or kept as the fallback should
the engine fail; everything else goes to the fill (`fill.py`), which calls the engine at most
once for all the coalesced requests.

Purges fence this work (see `cache/invalidation/__init__.py`): the lookup remembers the cache
generation, the fill does not store audio a purge has covered since, and the coalescing id
carries the generation, so a request arriving after a purge never joins work begun before it.

`fetch` is the lookup by key alone (`GET /v1/audio/{key}.{format}`): it never calls an engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voicecache.cache.coalescing import Coalescer
from voicecache.cache.fill import Filler
from voicecache.cache.policy import CacheControl
from voicecache.cache.refresh import Refresher
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.cache.variants import derive_variant
from voicecache.codecs import AudioFormat
from voicecache.errors import NotFound
from voicecache.model import EntryMeta, Plan, SpeechResult


@dataclass
class CacheLookup:
    """Serves planned requests and keys for one gateway; see the module docstring."""

    cache: TieredCache
    filler: Filler
    refresher: Refresher
    coalescer: Coalescer[SpeechResult]
    memory_hit: Callable[[str], SpeechResult | None]
    note_hit: Callable[[str, EntryMeta], None]
    storage_codec: AudioFormat
    stale_while_revalidate: bool = False

    async def serve(self, plan: Plan, control: CacheControl) -> SpeechResult:
        """Audio for `plan`: from the cache when fresh, else from the fill (coalesced)."""
        variant_id = plan.key.variant_id(plan.request.format)
        since = self.cache.generation
        if not control.no_cache:
            hit = self.memory_hit(variant_id)
            if hit is not None:
                return hit
        # The generation in the id: work begun before a purge is never joined after it.
        work_id = f"{variant_id}@{since}" + ("!no-store" if control.no_store else "")
        result, leader = await self.coalescer.run(
            work_id, lambda: self._lookup_or_fill(plan, control, variant_id, work_id, since)
        )
        if leader or result.status in ("HIT", "STALE"):
            return result
        return SpeechResult(
            result.data, result.format, result.key, "COALESCED", None, result.meta, result.stored
        )

    async def _lookup_or_fill(
        self, plan: Plan, control: CacheControl, variant_id: str, work_id: str, since: int
    ) -> SpeechResult:
        stale: Lookup | None = None
        if not control.no_cache:
            found = await self.cache.get(variant_id)
            if found is not None:
                if found.fresh:
                    self.note_hit(variant_id, found.entry.meta)
                    return SpeechResult.of(found.entry, "HIT", found.tier)
                stale = found
        if stale is not None and self.stale_while_revalidate:
            self.refresher.start(
                f"{work_id}!refresh",
                lambda: self.filler.fill_shared(plan, control, stale, since),
            )
            return SpeechResult.of(stale.entry, "STALE", stale.tier)
        return await self.filler.fill_shared(plan, control, stale, since)

    async def fetch(self, digest: str, fmt: AudioFormat, tenant: str | None) -> SpeechResult:
        """Stored audio by key; a missing format is derived from the canonical entry.

        Audio of a private voice is found only by its own tenant: checked on the header of
        what was found, before a hit is counted or a variant is made."""
        variant_id = f"{digest}.{fmt}"
        since = self.cache.generation
        found = await self.cache.get(variant_id)
        if found is not None and found.fresh:
            _check_tenant(found.entry.meta, tenant, digest)
            self.note_hit(variant_id, found.entry.meta)
            return SpeechResult.of(found.entry, "HIT", found.tier)
        canonical = await self.cache.get(f"{digest}.{self.storage_codec}")
        if canonical is None or not canonical.fresh:
            raise NotFound(f"no audio stored under key {digest}")
        _check_tenant(canonical.entry.meta, tenant, digest)
        return await derive_variant(self.cache, digest, canonical, fmt, since)


def _check_tenant(meta: EntryMeta, tenant: str | None, digest: str) -> None:
    """404, exactly as if nothing were stored, for audio that belongs to another tenant."""
    if meta.tenant is not None and meta.tenant != tenant:
        raise NotFound(f"no audio stored under key {digest}")
