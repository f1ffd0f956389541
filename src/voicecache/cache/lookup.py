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

`serve_stream` is the lookup for streamed requests, sharing the same coalesced work, so
identical requests, streamed or not, still cause one engine call. A streamed request that
leads the work makes the fill render live (`live.py`); every streamed request for that work
(the leader and those joining, early or late) follows the render from its first byte, and
whole requests await its end. Headers wait for the first byte: until then the outcome may
still be a hit found in a slower tier or a stale copy served after an engine error. A streamed
request joining work led by a whole request, or by a render that cannot stream (engines that
derive speed, another replica holding the fill lock), streams the audio once it is complete.
Stored audio (hits) is streamed from its bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from voicecache.cache.coalescing import Coalescer
from voicecache.cache.fill import Filler
from voicecache.cache.live import LiveRender
from voicecache.cache.policy import CacheControl
from voicecache.cache.refresh import Refresher
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.cache.variants import derive_variant
from voicecache.codecs import AudioFormat
from voicecache.errors import NotFound
from voicecache.model import EntryMeta, Plan, SpeechResult, SpeechStream, Status

# Stored audio is streamed in pieces of this size.
STREAM_PIECE = 64 * 1024


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
    # Work id → the live render of a fill led by a streamed request, while the work runs.
    _live: dict[str, LiveRender] = field(default_factory=dict, init=False, repr=False)
    # The fast lane's reads below memory: identical concurrent reads share one.
    _reads: Coalescer[Lookup | None] = field(default_factory=Coalescer, init=False, repr=False)

    async def cold(self, variant_id: str) -> Lookup | None:
        """The entry from the tiers below memory with cheap integrity checks (see
        `TieredCache.get`), for the fast lane; concurrent identical reads share one (a herd
        of hits must not send thousands of GETs to Redis at once)."""
        work_id = f"{variant_id}@{self.cache.generation}"
        found, _ = await self._reads.run(work_id, lambda: self.cache.get(variant_id, cheap=True))
        return found

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

    async def serve_stream(self, plan: Plan, control: CacheControl) -> SpeechStream:
        """Audio for `plan` as a stream; see the module docstring."""
        variant_id = plan.key.variant_id(plan.request.format)
        since = self.cache.generation
        if not control.no_cache:
            hit = self.memory_hit(variant_id)
            if hit is not None:
                return stored_stream(hit)
        work_id = f"{variant_id}@{since}" + ("!no-store" if control.no_store else "")
        mine = LiveRender()
        task, leader = self.coalescer.start(
            work_id, lambda: self._followed(mine, plan, control, variant_id, work_id, since)
        )
        if leader:
            self._live[work_id] = mine
            task.add_done_callback(lambda _: self._forget(work_id, mine))
        # None: the work was started by a whole request.
        live = mine if leader else self._live.get(work_id)
        if live is not None and not live.started and not task.done():
            # Not cancelled with this caller (`asyncio.wait` cancels nothing): the work is shared.
            await asyncio.wait((live.opened, task), return_when=asyncio.FIRST_COMPLETED)
        if live is not None and live.started:
            return self._live_stream(plan, control, live, "MISS" if leader else "COALESCED")
        result = await asyncio.shield(task)
        if not leader and result.status not in ("HIT", "STALE"):
            result = replace(result, status="COALESCED", tier=None)
        return stored_stream(result)

    def _live_stream(
        self, plan: Plan, control: CacheControl, live: LiveRender, status: Status
    ) -> SpeechStream:
        stored, expires_at = self.filler.provisional(plan, control)
        made: list[SpeechStream] = []

        async def follow() -> AsyncGenerator[bytes, None]:
            async with aclosing(live.follow()) as chunks:
                async for data in chunks:
                    yield data
            if live.result is not None:
                made[0].result = replace(live.result, status=status)

        stream = SpeechStream(
            key=plan.key.digest,
            format=plan.request.format,
            status=status,
            tier=None,
            stored=stored,
            private=plan.request.personalized or plan.voice.tenant is not None,
            expires_at=expires_at,
            characters=len(plan.request.text),
            chunks=follow(),
        )
        made.append(stream)
        return stream

    async def _followed(
        self,
        live: LiveRender,
        plan: Plan,
        control: CacheControl,
        variant_id: str,
        work_id: str,
        since: int,
    ) -> SpeechResult:
        """The work of a streamed request: the lookup or fill, rendering live on a miss."""
        try:
            result = await self._lookup_or_fill(plan, control, variant_id, work_id, since, live)
        except BaseException as exc:
            live.fail(exc)
            raise
        live.finish(result)
        return result

    def _forget(self, work_id: str, live: LiveRender) -> None:
        if self._live.get(work_id) is live:
            del self._live[work_id]

    async def _lookup_or_fill(
        self,
        plan: Plan,
        control: CacheControl,
        variant_id: str,
        work_id: str,
        since: int,
        live: LiveRender | None = None,
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
        return await self.filler.fill_shared(plan, control, stale, since, live)

    async def find(self, plan: Plan) -> SpeechResult | None:
        """Fresh stored audio for `plan` (a variant derived from the canonical entry counts),
        as a HIT; None otherwise. Never fills: for callers with their own way to make it."""
        fmt = plan.request.format
        variant_id = plan.key.variant_id(fmt)
        hit = self.memory_hit(variant_id)
        if hit is not None:
            return hit
        since = self.cache.generation
        found = await self.cache.get(variant_id)
        if found is not None and found.fresh:
            self.note_hit(variant_id, found.entry.meta)
            return SpeechResult.of(found.entry, "HIT", found.tier)
        if fmt != self.storage_codec:
            canonical = await self.cache.get(plan.key.variant_id(self.storage_codec))
            if canonical is not None and canonical.fresh:
                return await derive_variant(self.cache, plan.key.digest, canonical, fmt, since)
        return None

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


def stored_stream(result: SpeechResult) -> SpeechStream:
    """A stream of stored (or otherwise complete) audio."""
    meta = result.meta
    return SpeechStream(
        key=result.key,
        format=result.format,
        status=result.status,
        tier=result.tier,
        stored=result.stored,
        private=meta.personalized or meta.tenant is not None,
        expires_at=meta.expires_at,
        characters=len(meta.text),
        chunks=_pieces(result.data),
        result=result,
    )


async def _pieces(data: bytes) -> AsyncGenerator[bytes, None]:
    view = memoryview(data)
    for start in range(0, len(data), STREAM_PIECE):
        yield bytes(view[start : start + STREAM_PIECE])


def _check_tenant(meta: EntryMeta, tenant: str | None, digest: str) -> None:
    """404, exactly as if nothing were stored, for audio that belongs to another tenant."""
    if meta.tenant is not None and meta.tenant != tenant:
        raise NotFound(f"no audio stored under key {digest}")
