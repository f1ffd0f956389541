"""The core of voicecache: lookup → coalesce → engine → store → respond. It knows no HTTP.

Audio is stored once per key in the canonical codec (`storage_codec`, FLAC by default) and,
for any other format a client asks for, as a variant beside it (`<key>.<format>`), so a hit is
always a plain read of stored bytes and never transcodes. A request for a new format of a line
that is already cached transcodes from the canonical entry without calling the engine.

Every miss for the same variant in this process is coalesced into one piece of work, which
calls the engine at most once. When the engine fails and a stale copy is still within its
grace period, the stale copy is served (stale-if-error); with `stale_while_revalidate` a stale
copy is served at once and refreshed in the background, one refresh per key.

Purges fence this work (see `tiers/tiered.py`): a fill remembers the cache generation at its
lookup and does not store audio a purge has covered since; the coalescing id carries the
generation, so a request arriving after a purge never joins work that started before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

from voicecache import codecs
from voicecache.cache.coalescing import Coalescer
from voicecache.cache.policy import CacheControl, EntryPolicy, Policy
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.codecs import AudioFormat
from voicecache.errors import (
    EngineError,
    InvalidRequest,
    NotFound,
    UnknownEmotion,
    UnknownVoice,
)
from voicecache.keys import build_key
from voicecache.model import (
    CacheKey,
    Engine,
    Entry,
    EntryMeta,
    Reference,
    SpeechRequest,
    SynthesisJob,
    checksum,
)

if TYPE_CHECKING:
    from voicecache.cluster.fill_lock import FillLock

Status = Literal["HIT", "MISS", "COALESCED", "STALE"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvedVoice:
    """What a requested voice id means for one engine and one tenant."""

    engine_voice: str
    version: str = "builtin"
    tenant: str | None = None  # set for private voices: their audio is keyed per tenant
    reference: Reference | None = None


class VoiceResolver(Protocol):
    """Maps a requested voice id to an engine voice (built-in or uploaded)."""

    async def resolve(self, voice: str, engine: Engine, tenant: str | None) -> ResolvedVoice: ...


class BuiltinVoices:
    """Resolves only the engine's own voices."""

    async def resolve(self, voice: str, engine: Engine, tenant: str | None) -> ResolvedVoice:
        if not engine.accepts_voice(voice):
            known = ", ".join(info.id for info in engine.voices()[:40])
            raise UnknownVoice(f"unknown voice {voice!r} for engine {engine.name}; known: {known}")
        return ResolvedVoice(voice)


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """Audio for a request and how it was obtained."""

    data: bytes
    format: AudioFormat
    key: str
    status: Status
    tier: str | None
    meta: EntryMeta
    stored: bool = True

    @property
    def content_type(self) -> str:
        return codecs.CONTENT_TYPES[self.format]

    @property
    def etag(self) -> str:
        return f'"{self.key}.{self.format}"'


class GatewayObserver(Protocol):
    """Receives what happened, for metrics and logs. Must be cheap and never raise."""

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None: ...

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None: ...

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None: ...


class NullObserver:
    """Observes nothing."""

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None:
        pass

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None:
        pass

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None:
        pass


class Admission(Protocol):
    """May refuse a miss just before the engine is called (e.g. a characters-per-minute
    rate limit: misses cost money, hits do not)."""

    async def before_engine(self, plan: Plan) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """A request resolved against an engine and a voice: everything needed to fill it."""

    request: SpeechRequest
    engine: Engine
    job: SynthesisJob
    key: CacheKey
    voice: ResolvedVoice


@dataclass
class Gateway:
    """Serves speech requests from the cache, filling misses from engines."""

    engines: Mapping[str, Engine]
    default_engine: str
    cache: TieredCache
    policy: Policy
    voices: VoiceResolver = field(default_factory=BuiltinVoices)
    observer: GatewayObserver = field(default_factory=NullObserver)
    admission: Admission | None = None
    storage_codec: AudioFormat = "flac"
    clock: Callable[[], float] = time.time
    # Cross-replica coalescing (distlock.py), wired by service.py when Redis is configured.
    fill_lock: FillLock | None = None
    stale_while_revalidate: bool = False
    _coalescer: Coalescer[SpeechResult] = field(default_factory=Coalescer, init=False)
    _refreshes: set[asyncio.Task[object]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        if self.default_engine not in self.engines:
            raise InvalidRequest(f"default engine {self.default_engine!r} is not configured")

    # -- resolving ---------------------------------------------------------------------------

    def engine_for(self, name: str | None) -> Engine:
        """The engine named `name`, or the default one for None."""
        if name is None:
            return self.engines[self.default_engine]
        engine = self.engines.get(name)
        if engine is None:
            raise InvalidRequest(
                f"unknown engine {name!r}; configured: {', '.join(sorted(self.engines))}"
            )
        return engine

    async def plan(self, request: SpeechRequest, tenant: str | None = None) -> Plan:
        """Resolve engine, voice and emotion, and build the cache key."""
        engine = self.engine_for(request.engine)
        if request.emotion not in engine.emotions():
            raise UnknownEmotion(
                f"unknown emotion {request.emotion!r} for engine {engine.name}; "
                f"accepted: {', '.join(engine.emotions())}"
            )
        voice = await self.voices.resolve(request.voice, engine, tenant)
        job = SynthesisJob(
            text=request.text,
            voice=voice.engine_voice,
            emotion=request.emotion,
            speed=request.speed,
            instructions=request.instructions,
            reference=voice.reference,
        )
        key = build_key(
            text=request.text,
            engine=engine.name,
            model_version=engine.model_version,
            voice=request.voice,
            voice_version=voice.version,
            emotion=request.emotion,
            speed=request.speed,
            tenant=voice.tenant,
            options=engine.key_options(job),
        )
        return Plan(request, engine, job, key, voice)

    # -- serving -----------------------------------------------------------------------------

    async def speak(
        self,
        request: SpeechRequest,
        *,
        tenant: str | None = None,
        control: CacheControl = CacheControl(),  # noqa: B008 - frozen, safe to share
    ) -> SpeechResult:
        """Audio for `request`: from the cache when fresh, else from the engine (once)."""
        started = time.perf_counter()
        engine_name = request.engine or self.default_engine
        try:
            plan = await self.plan(request, tenant)
            engine_name = plan.engine.name
            result = await self._serve(plan, control)
        except Exception as exc:
            self.observer.request_failed(exc, engine_name, time.perf_counter() - started)
            raise
        self.observer.request_done(result, engine_name, time.perf_counter() - started)
        return result

    async def _serve(self, plan: Plan, control: CacheControl) -> SpeechResult:
        variant_id = plan.key.variant_id(plan.request.format)
        since = self.cache.generation
        if not control.no_cache:
            hit = self.memory_hit(variant_id)
            if hit is not None:
                return hit
        # The generation in the id: work begun before a purge is never joined after it.
        work_id = f"{variant_id}@{since}" + ("!no-store" if control.no_store else "")
        # Identical requests share the lookup in the slower tiers too, not only the fill: a
        # herd of thousands must not open thousands of Redis connections at once.
        result, leader = await self._coalescer.run(
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
                    return self._result(found.entry, "HIT", found.tier)
                stale = found
        if stale is not None and self.stale_while_revalidate:
            self._refresh(f"{work_id}!refresh", plan, control, stale, since)
            return self._result(stale.entry, "STALE", stale.tier)
        return await self._fill_shared(plan, control, stale, since)

    def memory_hit(self, variant_id: str) -> SpeechResult | None:
        """A fresh hit from the memory tier, synchronously: the fast lane's whole lookup."""
        found = self.cache.peek_memory(variant_id)
        if found is None:
            return None
        self.note_hit(variant_id, found.entry.meta)
        return self._result(found.entry, "HIT", found.tier)

    async def _fill_shared(
        self, plan: Plan, control: CacheControl, stale: Lookup | None, since: int
    ) -> SpeechResult:
        """`_fill` under the cross-replica fill lock when one is configured: one replica calls
        the engine, the others serve what it stored."""
        if self.fill_lock is None or control.no_cache or control.no_store:
            return await self._fill(plan, control, stale, since)
        acquired = await self.fill_lock.acquire(
            plan.key.digest, lambda: self._filled_elsewhere(plan, since)
        )
        if acquired.result is not None:
            return acquired.result
        try:
            if acquired.lease is not None:
                # Another replica may have stored it between our miss and our lock.
                done = await self._filled_elsewhere(plan, since)
                if done is not None:
                    return done
            return await self._fill(plan, control, stale, since)
        finally:
            if acquired.lease is not None:
                await acquired.lease.release()

    async def _filled_elsewhere(self, plan: Plan, since: int) -> SpeechResult | None:
        """The fresh audio another replica stored for `plan`, if any (no engine call)."""
        fmt = plan.request.format
        found = await self.cache.get(plan.key.variant_id(fmt))
        if found is not None and found.fresh:
            return self._result(found.entry, "COALESCED", found.tier)
        if fmt != self.storage_codec:
            canonical = await self.cache.get(plan.key.variant_id(self.storage_codec))
            if canonical is not None and canonical.fresh:
                return replace(
                    await self._derive_variant(plan, canonical, since), status="COALESCED"
                )
        return None

    def _refresh(
        self, work_id: str, plan: Plan, control: CacheControl, stale: Lookup, since: int
    ) -> None:
        """Refill a stale entry in the background; concurrent stale hits share one refresh."""
        if self._coalescer.running(work_id):
            return
        task = asyncio.ensure_future(
            self._coalescer.run(work_id, lambda: self._fill_shared(plan, control, stale, since))
        )
        self._refreshes.add(task)
        task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[object]) -> None:
        self._refreshes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Nobody waits for a background refresh; the next request simply tries again.
            log.warning("background refresh failed: %s", task.exception())

    def note_hit(self, entry_id: str, meta: EntryMeta) -> None:
        """Record a cache hit: extends sliding and popular entries' lives by an occasional
        header touch. Cheap (a dict update), so the fast lane calls it on memory hits too."""
        if meta.expires_at is None:
            return
        updated = self.policy.hit(entry_id, meta)
        if updated is not None:
            self.cache.touch(entry_id, updated)

    async def _fill(
        self, plan: Plan, control: CacheControl, stale: Lookup | None, since: int
    ) -> SpeechResult:
        fmt = plan.request.format
        canonical_id = plan.key.variant_id(self.storage_codec)
        if fmt != self.storage_codec and not control.no_cache:
            canonical = await self.cache.get(canonical_id)
            if canonical is not None and canonical.fresh:
                return await self._derive_variant(plan, canonical, since)
        if self.admission is not None:
            await self.admission.before_engine(plan)
        try:
            pcm = await self._render(plan)
        except EngineError:
            if stale is not None:
                return self._result(stale.entry, "STALE", stale.tier)
            raise
        decided = self.policy.resolve(plan.request, plan.engine.name, control)
        store = not control.no_store and (decided.ttl is None or decided.ttl > 0)
        canonical_entry = await self._encode(plan, pcm, self.storage_codec, decided)
        entry = (
            canonical_entry
            if fmt == self.storage_codec
            else await self._encode(plan, pcm, fmt, decided)
        )
        if store:
            await self.cache.set(canonical_id, canonical_entry, since)
            if entry is not canonical_entry:
                await self.cache.set(plan.key.variant_id(fmt), entry, since)
        return self._result(entry, "MISS", None, stored=store)

    async def _render(self, plan: Plan) -> codecs.Audio:
        """PCM for a miss. Engines that derive speed locally (`Engine.derives_speed`) get
        their speed-1.0 render of the line served, cached and coalesced like any request,
        and the other speed is time-stretched from it: one engine call for every speed."""
        if not plan.engine.derives_speed(plan.job):
            return await self._synthesize(plan)
        base_request = replace(plan.request, speed=1.0, format=self.storage_codec)
        base = await self._serve(await self.plan(base_request, plan.voice.tenant), CacheControl())
        pcm = await asyncio.to_thread(codecs.decode, base.data, base.format)
        return await asyncio.to_thread(codecs.time_stretch, pcm, plan.job.speed)

    async def _synthesize(self, plan: Plan) -> codecs.Audio:
        started = time.perf_counter()
        characters = len(plan.job.text)
        try:
            pcm = await plan.engine.synthesize(plan.job)
        except EngineError as exc:
            self.observer.engine_call(
                plan.engine.name, type(exc).__name__, time.perf_counter() - started, characters
            )
            raise
        self.observer.engine_call(plan.engine.name, "ok", time.perf_counter() - started, characters)
        return pcm

    async def _derive_variant(self, plan: Plan, canonical: Lookup, since: int) -> SpeechResult:
        """Transcode a cached canonical entry to the requested format and store the variant."""
        fmt = plan.request.format
        source = canonical.entry
        data = await asyncio.to_thread(codecs.transcode, source.data, source.meta.format, fmt)
        meta = _variant_meta(source.meta, fmt, data)
        entry = Entry(data, meta)
        await self.cache.set(plan.key.variant_id(fmt), entry, since)
        return self._result(entry, "HIT", canonical.tier)

    async def _encode(
        self, plan: Plan, pcm: codecs.Audio, fmt: AudioFormat, decided: EntryPolicy
    ) -> Entry:
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

    def _result(
        self, entry: Entry, status: Status, tier: str | None, stored: bool = True
    ) -> SpeechResult:
        return SpeechResult(
            entry.data, entry.meta.format, entry.meta.key, status, tier, entry.meta, stored
        )

    # -- by key --------------------------------------------------------------------------------

    async def fetch(
        self, digest: str, fmt: AudioFormat, *, tenant: str | None = None
    ) -> SpeechResult:
        """Stored audio by key, for `GET /v1/audio/{key}.{format}`; never calls an engine."""
        started = time.perf_counter()
        since = self.cache.generation
        found = await self.cache.get(f"{digest}.{fmt}")
        if found is None or not found.fresh:
            canonical = await self.cache.get(f"{digest}.{self.storage_codec}")
            if canonical is None or not canonical.fresh:
                raise NotFound(f"no audio stored under key {digest}")
            data = await asyncio.to_thread(
                codecs.transcode, canonical.entry.data, canonical.entry.meta.format, fmt
            )
            entry = Entry(data, _variant_meta(canonical.entry.meta, fmt, data))
            await self.cache.set(f"{digest}.{fmt}", entry, since)
            found = Lookup(entry, canonical.tier, True)
        meta = found.entry.meta
        if meta.tenant is not None and meta.tenant != tenant:
            raise NotFound(f"no audio stored under key {digest}")
        result = self._result(found.entry, "HIT", found.tier)
        self.observer.request_done(result, meta.engine, time.perf_counter() - started)
        return result

    def engine_names(self) -> Sequence[str]:
        return sorted(self.engines)

    async def aclose(self) -> None:
        for task in list(self._refreshes):
            task.cancel()
        await asyncio.gather(*self._refreshes, return_exceptions=True)
        await self.cache.aclose()
        if self.admission is not None:
            await self.admission.aclose()
        for engine in self.engines.values():
            await engine.aclose()


def _variant_meta(source: EntryMeta, fmt: AudioFormat, data: bytes) -> EntryMeta:
    rate = codecs.PCM_RATE if fmt == "pcm" else source.sample_rate
    if fmt == "opus" and rate not in codecs.OPUS_RATES:
        rate = codecs.PCM_RATE
    return replace(source, format=fmt, size=len(data), checksum=checksum(data), sample_rate=rate)
