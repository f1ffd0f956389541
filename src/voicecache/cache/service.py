"""The gateway: voicecache's one entry point for speech, knowing no HTTP.

`Gateway` is a small facade over the steps, each in its own module:

- `plan` (here): resolve engine, voice and emotion, and build the cache key (`keys.py`);
- the lookup (`lookup.py`): memory tier, then the slower tiers, identical requests coalesced;
- the fill (`fill.py`): fill lock, admission, engine, encode, store, stale-if-error;
- the background refresh of stale entries (`refresh.py`);
- format variants transcoded from the canonical entry (`variants.py`);
- texts spoken as cached segments and templates (`segments/`), composed on top: `speak` hands
  each request to the segment speaker first, which answers None when it is to be spoken whole.

`speak` and `fetch` time and observe each request; `speak_stream` is `speak` for streamed
responses (`SpeechStream`), observed when its last byte has been handed on. `memory_hit` and
`note_hit` are the fast lane's synchronous hit path and stay here, one call deep, because
they are the hot loop.
The parts are wired once, when the gateway is constructed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from voicecache.cache.coalescing import Coalescer
from voicecache.cache.fill import Filler
from voicecache.cache.lookup import CacheLookup
from voicecache.cache.policy import CacheControl, Policy
from voicecache.cache.refresh import Refresher
from voicecache.cache.segments import SegmentSpeaker
from voicecache.cache.tiers.tiered import TieredCache
from voicecache.codecs import Audio, AudioFormat
from voicecache.errors import ConfigError, InvalidRequest, UnknownEmotion, UnknownVoice
from voicecache.keys import build_key
from voicecache.model import (
    Admission,
    Engine,
    EntryMeta,
    FillLock,
    GatewayObserver,
    Plan,
    ResolvedVoice,
    SpeechRequest,
    SpeechResult,
    SpeechStream,
    SynthesisJob,
    VoiceResolver,
)


class BuiltinVoices:
    """Resolves only the engine's own voices (the gateway's default `VoiceResolver`)."""

    async def resolve(self, voice: str, engine: Engine, tenant: str | None) -> ResolvedVoice:
        if not engine.accepts_voice(voice):
            known = ", ".join(info.id for info in engine.voices()[:40])
            raise UnknownVoice(f"unknown voice {voice!r} for engine {engine.name}; known: {known}")
        return ResolvedVoice(voice)


class NullObserver:
    """Observes nothing (the gateway's default `GatewayObserver`)."""

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None:
        pass

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None:
        pass

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None:
        pass

    def segment_done(self, status: str, characters: int) -> None:
        pass


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
    # Cross-replica coalescing (`cluster/fill_lock.py`), given when Redis is configured.
    fill_lock: FillLock | None = None
    stale_while_revalidate: bool = False
    # Segments and templates (`segments/`); None: every request is spoken whole.
    segments: SegmentSpeaker | None = None
    _coalescer: Coalescer[SpeechResult] = field(default_factory=Coalescer, init=False, repr=False)
    _refresher: Refresher = field(init=False, repr=False)
    _lookup: CacheLookup = field(init=False, repr=False)
    _filler: Filler = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.default_engine not in self.engines:
            raise ConfigError(f"default engine {self.default_engine!r} is not configured")
        self._refresher = Refresher(self._coalescer)
        self._filler = filler = Filler(
            cache=self.cache,
            policy=self.policy,
            observer=self.observer,
            storage_codec=self.storage_codec,
            clock=self.clock,
            speed_one=self._speed_one,
            admission=self.admission,
            fill_lock=self.fill_lock,
        )
        self._lookup = CacheLookup(
            cache=self.cache,
            filler=filler,
            refresher=self._refresher,
            coalescer=self._coalescer,
            memory_hit=self.memory_hit,
            note_hit=self.note_hit,
            storage_codec=self.storage_codec,
            stale_while_revalidate=self.stale_while_revalidate,
        )

    # -- resolving ---------------------------------------------------------------------------

    def engine_for(self, name: str | None) -> Engine:
        """The engine named `name`, or the default one for None."""
        if name is None:
            return self.engines[self.default_engine]
        engine = self.engines.get(name)
        if engine is None:
            raise InvalidRequest(
                f"unknown engine {name!r}; configured: {', '.join(sorted(self.engines))}",
                "engine",
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
            result = None
            if self.segments is not None:
                result = await self.segments.speak(self, plan, tenant, control)
            if result is None:
                result = await self._lookup.serve(plan, control)
        except Exception as exc:
            self.observer.request_failed(exc, engine_name, time.perf_counter() - started)
            raise
        self.observer.request_done(result, engine_name, time.perf_counter() - started)
        return result

    async def speak_stream(
        self,
        request: SpeechRequest,
        *,
        tenant: str | None = None,
        control: CacheControl = CacheControl(),  # noqa: B008 - frozen, safe to share
    ) -> SpeechStream:
        """`speak`, as a stream of bytes: a miss is handed on while the engine renders it
        (one render for every identical request, streamed or not), a hit from stored audio.
        Returns once the response's headers are known (at the first byte of a miss)."""
        started = time.perf_counter()
        engine_name = request.engine or self.default_engine
        try:
            plan = await self.plan(request, tenant)
            engine_name = plan.engine.name
            stream = None
            if self.segments is not None:
                stream = await self.segments.speak_stream(self, plan, tenant, control)
            if stream is None:
                stream = await self._lookup.serve_stream(plan, control)
        except Exception as exc:
            self.observer.request_failed(exc, engine_name, time.perf_counter() - started)
            raise
        stream.chunks = self._observed(stream, stream.chunks, engine_name, started)
        return stream

    async def _observed(
        self,
        stream: SpeechStream,
        chunks: AsyncGenerator[bytes, None],
        engine: str,
        started: float,
    ) -> AsyncGenerator[bytes, None]:
        """`chunks`, observed as a request once they end (a client leaving early: not at all)."""
        try:
            async with aclosing(chunks):
                async for data in chunks:
                    yield data
        except Exception as exc:
            self.observer.request_failed(exc, engine, time.perf_counter() - started)
            raise
        if stream.result is not None:
            self.observer.request_done(stream.result, engine, time.perf_counter() - started)

    async def speak_whole(
        self,
        request: SpeechRequest,
        *,
        tenant: str | None = None,
        control: CacheControl = CacheControl(),  # noqa: B008 - frozen, safe to share
    ) -> SpeechResult:
        """`speak` for one segment of a segmented text: never split, not observed as a request
        (the segment speaker observes it as a segment)."""
        return await self._lookup.serve(await self.plan(request, tenant), control)

    async def cached(self, plan: Plan) -> SpeechResult | None:
        """Fresh stored audio for `plan` as a HIT, or None; never calls an engine."""
        return await self._lookup.find(plan)

    def lifetime(self, plan: Plan, control: CacheControl) -> tuple[bool, float | None]:
        """(stored, expires_at) that audio of `plan` made now will get, for the headers of a
        stream sent before the audio exists."""
        return self._filler.provisional(plan, control)

    async def store(
        self,
        plan: Plan,
        pcm: Audio,
        control: CacheControl,
        since: int | None = None,
        encoded: bytes | None = None,
    ) -> SpeechResult:
        """Encode and store `pcm` as the audio of `plan`, exactly as a fill would (the lifetimes
        of the policy, `control`); `since` is the cache generation the audio was begun at,
        `encoded` the requested format's file when a stream has encoded it already."""
        generation = self.cache.generation if since is None else since
        return await self._filler.store(plan, pcm, control, generation, encoded)

    async def _speed_one(self, plan: Plan) -> SpeechResult:
        """The line of `plan` at speed 1.0 in the storage codec, served like any request."""
        base = replace(plan.request, speed=1.0, format=self.storage_codec)
        return await self._lookup.serve(await self.plan(base, plan.voice.tenant), CacheControl())

    def memory_hit(self, variant_id: str) -> SpeechResult | None:
        """A fresh hit from the memory tier, synchronously, counted as served: the fast lane's
        whole lookup for speech requests (whose key already carries any tenant)."""
        found = self.cache.peek_memory(variant_id)
        if found is None:
            return None
        entry = found.entry
        self.note_hit(variant_id, entry.meta)
        # Built inline, not through `SpeechResult.of`: this is the hot loop.
        return SpeechResult(
            entry.data, entry.meta.format, entry.meta.key, "HIT", found.tier, entry.meta
        )

    def memory_peek(self, variant_id: str) -> SpeechResult | None:
        """`memory_hit` without counting the hit: for callers that must still check who may
        have it (a key is public, its audio may not be) and then call `note_hit`."""
        found = self.cache.peek_memory(variant_id)
        if found is None:
            return None
        entry = found.entry
        return SpeechResult(
            entry.data, entry.meta.format, entry.meta.key, "HIT", found.tier, entry.meta
        )

    async def cold_peek(self, variant_id: str) -> SpeechResult | None:
        """A fresh hit from the tiers below memory (disk, Redis, S3), not yet counted (as
        `memory_peek`): the fast lane's lookup once memory missed. Integrity is checked
        cheaply (header and length; each stored copy's checksum once per process), and the
        hit is promoted into memory in the background. None for a miss or a stale entry:
        the slow path decides those."""
        found = await self._lookup.cold(variant_id)
        if found is None or not found.fresh:
            return None
        entry = found.entry
        return SpeechResult(
            entry.data, entry.meta.format, entry.meta.key, "HIT", found.tier, entry.meta
        )

    def note_hit(self, entry_id: str, meta: EntryMeta) -> None:
        """Record a served cache hit: extends sliding and popular entries' lives by an
        occasional header touch. Cheap (a dict update), so the fast lane calls it too.

        The one rule, on every path: a hit is counted when stored audio is served as it is,
        after the tenant check; a variant transcoded on the way is new and starts uncounted."""
        if meta.expires_at is None:
            return
        updated = self.policy.hit(entry_id, meta)
        if updated is not None:
            self.cache.touch(entry_id, updated)

    async def fetch(
        self, digest: str, fmt: AudioFormat, *, tenant: str | None = None
    ) -> SpeechResult:
        """Stored audio by key, for `GET /v1/audio/{key}.{format}`; never calls an engine."""
        started = time.perf_counter()
        result = await self._lookup.fetch(digest, fmt, tenant)
        self.observer.request_done(result, result.meta.engine, time.perf_counter() - started)
        return result

    async def aclose(self) -> None:
        await self._refresher.aclose()
        await self.cache.aclose()
        if self.admission is not None:
            await self.admission.aclose()
        for engine in self.engines.values():
            await engine.aclose()
