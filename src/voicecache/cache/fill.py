"""The fill: a miss turned into stored audio, calling the engine at most once.

In order: take the cross-replica fill lock when one is configured (one replica calls the
engine, the others serve what it stored); derive the requested format from a cached canonical
entry if there is one (`variants.py`); ask the admission (rate limits) before spending an engine
call; render PCM (from the engine, or by time-stretching the cached speed-1.0 render for
engines that derive speed locally); encode the canonical entry and the requested variant with
the lifetimes `Policy` decides; store both unless the request or the policy says not to.

When the engine fails and a stale copy is still within its grace period, the stale copy is
served instead (stale-if-error).

A fill led by a streamed request renders live (`live.py`): it iterates `Engine.stream`,
encodes each chunk as it comes (`codecs.StreamEncoder`) and hands the bytes to the
`LiveRender` that every streaming caller follows; at the end the encoder's complete file is
stored as the variant, and the canonical entry is encoded from the whole PCM, exactly as for
a whole fill. A render that breaks before its end stores nothing. Stale-if-error still holds
for every caller that has not received a byte yet; callers already following see the break.
Engines that derive speed locally render whole (their source is the cached speed-1.0 audio).

Every store passes the cache generation at the request's lookup (`since`), so audio that a
purge has covered in between is never stored (see `tiers/tiered.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

import numpy as np

from voicecache import codecs
from voicecache.cache.live import LiveRender
from voicecache.cache.policy import CacheControl, EntryPolicy, Policy
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.cache.variants import derive_variant
from voicecache.codecs import AudioFormat
from voicecache.errors import EngineError
from voicecache.model import (
    Admission,
    Entry,
    EntryMeta,
    FillLock,
    GatewayObserver,
    Plan,
    SpeechResult,
    SynthesisJob,
    checksum,
)

# Serves the speed-1.0 render of a plan's line (planned, cached and coalesced like any
# request): the source that engines deriving speed locally stretch from.
SpeedOne = Callable[[Plan], Awaitable[SpeechResult]]


@dataclass
class Filler:
    """Fills misses for one gateway; see the module docstring."""

    cache: TieredCache
    policy: Policy
    observer: GatewayObserver
    storage_codec: AudioFormat
    clock: Callable[[], float]
    speed_one: SpeedOne
    admission: Admission | None = None
    fill_lock: FillLock | None = None

    async def fill_shared(
        self,
        plan: Plan,
        control: CacheControl,
        stale: Lookup | None,
        since: int,
        live: LiveRender | None = None,
    ) -> SpeechResult:
        """`fill` under the cross-replica fill lock when one is configured: one replica calls
        the engine, the others serve what it stored."""
        if self.fill_lock is None or control.no_cache or control.no_store:
            return await self.fill(plan, control, stale, since, live)
        acquired = await self.fill_lock.acquire(
            plan.key.digest, lambda: self.filled_elsewhere(plan, since)
        )
        if acquired.result is not None:
            return acquired.result
        try:
            if acquired.lease is not None:
                # Another replica may have stored it between our miss and our lock.
                done = await self.filled_elsewhere(plan, since)
                if done is not None:
                    return done
            return await self.fill(plan, control, stale, since, live)
        finally:
            if acquired.lease is not None:
                await acquired.lease.release()

    async def filled_elsewhere(self, plan: Plan, since: int) -> SpeechResult | None:
        """The fresh audio another replica stored for `plan`, if any (no engine call)."""
        fmt = plan.request.format
        found = await self.cache.get(plan.key.variant_id(fmt))
        if found is not None and found.fresh:
            return SpeechResult.of(found.entry, "COALESCED", found.tier)
        if fmt != self.storage_codec:
            canonical = await self.cache.get(plan.key.variant_id(self.storage_codec))
            if canonical is not None and canonical.fresh:
                derived = await derive_variant(self.cache, plan.key.digest, canonical, fmt, since)
                return replace(derived, status="COALESCED")
        return None

    async def fill(
        self,
        plan: Plan,
        control: CacheControl,
        stale: Lookup | None,
        since: int,
        live: LiveRender | None = None,
    ) -> SpeechResult:
        """Audio for a miss: derived from the canonical entry, or rendered and stored; with
        `live`, rendered as a stream that callers follow while it is made."""
        fmt = plan.request.format
        canonical_id = plan.key.variant_id(self.storage_codec)
        if fmt != self.storage_codec and not control.no_cache:
            canonical = await self.cache.get(canonical_id)
            if canonical is not None and canonical.fresh:
                return await derive_variant(self.cache, plan.key.digest, canonical, fmt, since)
        if self.admission is not None:
            await self.admission.before_engine(plan)
        encoded: bytes | None = None  # the variant, when the live render encoded it already
        try:
            if live is not None and not plan.engine.derives_speed(plan.job):
                pcm, encoded = await self._render_live(plan, live)
            else:
                pcm = await self._render(plan)
        except EngineError as exc:
            if live is not None and live.started:
                live.fail(exc)  # its followers have bytes of this render: never splice
            if stale is not None:
                return SpeechResult.of(stale.entry, "STALE", stale.tier)
            raise
        return await self.store(plan, pcm, control, since, encoded)

    async def store(
        self,
        plan: Plan,
        pcm: codecs.Audio,
        control: CacheControl,
        since: int,
        encoded: bytes | None = None,
    ) -> SpeechResult:
        """`pcm` as the audio of `plan`: its canonical entry and the requested variant
        (`encoded`: already encoded, by a live render), encoded with the lifetimes the policy
        decides and stored unless the request or the policy says not to (a MISS). Also
        stores the joined audio of a segmented text."""
        fmt = plan.request.format
        canonical_id = plan.key.variant_id(self.storage_codec)
        decided = self.policy.resolve(plan.request, plan.engine.name, control)
        store = not control.no_store and (decided.ttl is None or decided.ttl > 0)
        if encoded is not None and fmt == self.storage_codec:
            canonical_entry = await self._encode(plan, pcm, fmt, decided, encoded)
        else:
            canonical_entry = await self._encode(plan, pcm, self.storage_codec, decided)
        entry = (
            canonical_entry
            if fmt == self.storage_codec
            else await self._encode(plan, pcm, fmt, decided, encoded)
        )
        if store:
            await self.cache.set(canonical_id, canonical_entry, since)
            if entry is not canonical_entry:
                await self.cache.set(plan.key.variant_id(fmt), entry, since)
        return SpeechResult.of(entry, "MISS", None, stored=store)

    def provisional(self, plan: Plan, control: CacheControl) -> tuple[bool, float | None]:
        """(stored, expires_at) that a fill of `plan` starting now will give its entry, for
        the headers of a stream sent before the entry exists."""
        decided = self.policy.resolve(plan.request, plan.engine.name, control)
        store = not control.no_store and (decided.ttl is None or decided.ttl > 0)
        return store, self.policy.expiry(decided, self.clock())[0]

    async def _render(self, plan: Plan) -> codecs.Audio:
        """PCM for a miss. Engines that derive speed locally (`Engine.derives_speed`) get
        their speed-1.0 render of the line served, cached and coalesced like any request,
        and the other speed is time-stretched from it: one engine call for every speed."""
        if not plan.engine.derives_speed(plan.job):
            return await self._synthesize(plan)
        base = await self.speed_one(plan)
        pcm = await asyncio.to_thread(codecs.decode, base.data, base.format)
        return await asyncio.to_thread(codecs.time_stretch, pcm, plan.job.speed)

    async def _job(self, plan: Plan) -> SynthesisJob:
        if plan.voice.load_reference is None:
            return plan.job
        # Decrypted here, on a miss, and never for a hit (`ResolvedVoice.load_reference`).
        return replace(plan.job, reference=await plan.voice.load_reference())

    async def _synthesize(self, plan: Plan) -> codecs.Audio:
        job = await self._job(plan)
        started = time.perf_counter()
        characters = len(job.text)
        try:
            pcm = await plan.engine.synthesize(job)
        except EngineError as exc:
            self.observer.engine_call(
                plan.engine.name, type(exc).__name__, time.perf_counter() - started, characters
            )
            raise
        self.observer.engine_call(plan.engine.name, "ok", time.perf_counter() - started, characters)
        return pcm

    async def _render_live(self, plan: Plan, live: LiveRender) -> tuple[codecs.Audio, bytes]:
        """PCM from `Engine.stream`, each chunk encoded and handed to `live` as it comes;
        returns the whole PCM and the complete encoded file."""
        job = await self._job(plan)
        started = time.perf_counter()
        encoder: codecs.StreamEncoder | None = None
        parts: list[np.ndarray] = []
        try:
            async with aclosing(plan.engine.stream(job)) as chunks:
                async for chunk in chunks:
                    if encoder is None:
                        encoder = codecs.StreamEncoder(plan.request.format, chunk.sample_rate)
                    elif chunk.sample_rate != encoder.sample_rate:
                        raise EngineError(
                            f"engine {plan.engine.name} changed its sample rate mid-stream"
                        )
                    parts.append(chunk.samples)
                    if encoder.cheap:
                        live.push(encoder.write(chunk.samples))
                    else:  # Opus: tens of milliseconds per second of audio
                        live.push(await asyncio.to_thread(encoder.write, chunk.samples))
            if encoder is None:
                raise EngineError(f"engine {plan.engine.name} produced no audio")
        except EngineError as exc:
            self.observer.engine_call(
                plan.engine.name, type(exc).__name__, time.perf_counter() - started, len(job.text)
            )
            raise
        self.observer.engine_call(
            plan.engine.name, "ok", time.perf_counter() - started, len(job.text)
        )
        tail, complete = await asyncio.to_thread(encoder.close)
        live.push(tail)
        return codecs.Audio(np.concatenate(parts), encoder.sample_rate), complete

    async def _encode(
        self,
        plan: Plan,
        pcm: codecs.Audio,
        fmt: AudioFormat,
        decided: EntryPolicy,
        data: bytes | None = None,
    ) -> Entry:
        """The entry for `pcm` as `fmt` (`data`: already encoded)."""
        if data is None:
            data = await asyncio.to_thread(codecs.encode, pcm, fmt)
        now = self.clock()
        expires_at, stale_until = self.policy.expiry(decided, now)
        request = plan.request
        # max_ttl bounds every extension: sliding and popularity alike.
        max_expires_at = None
        if decided.max_ttl is not None and expires_at is not None:
            max_expires_at = now + max(decided.max_ttl, decided.ttl or 0.0)
        meta = EntryMeta(
            key=plan.key.digest,
            format=fmt,
            sample_rate=codecs.PCM_RATE if fmt == "pcm" else pcm.sample_rate,
            duration=round(pcm.duration, 3),
            size=len(data),
            checksum=checksum(data),
            created=now,
            expires_at=expires_at,
            stale_until=stale_until,
            engine=plan.engine.name,
            model_version=plan.engine.model_version,
            voice=request.voice,
            voice_version=plan.voice.version,
            emotion=request.emotion,
            speed=request.speed,
            text=request.text,
            tags=request.tags,
            tenant=plan.voice.tenant,
            personalized=request.personalized,
            sliding=decided.sliding,
            ttl=decided.ttl,
            max_expires_at=max_expires_at,
        )
        return Entry(data, meta)
