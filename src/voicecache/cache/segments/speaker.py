"""The segment speaker: a text spoken as cached segments, joined, and stored whole.

Composed on top of the gateway (`cache/service.py`), which calls `speak` for every request
and serves the request whole when it answers None:

1. Decide the pieces (`pieces`): the first `[[templates]]` entry the text matches (unless the
   request says `"segments": "off"`), else sentence splitting when the mode is `sentence`
   (the request's `segments`, else the engine's, else `VOICECACHE_SEGMENTS`). Fewer than two
   pieces: the request is served whole, as always.
2. The whole text already stored: a plain HIT, nothing else happens.
3. Every piece is an ordinary request through the gateway (`speak_whole`): its cache entry is
   exactly the one a request for that text alone would have (same engine, model version,
   voice and version, emotion, speed), so a sentence once asked alone is reused inside long
   texts and the other way round; misses go to the engine concurrently (at most the engine's
   concurrency limit of one text's pieces at once), each coalesced with identical work in
   flight, also across replicas (the gateway's fill lock). Pieces are asked in the canonical
   storage codec, so joining decodes each once and never re-decodes a lossy variant.
4. The decoded pieces are joined (`join.py`) and encoded into the requested format; the whole
   text is stored under its own key, so the same request next time is a plain HIT, except
   when it is personalized (the request says so, or a template slot is in it) or some piece
   was served stale. Template slots are asked as personalized lines (the personalized TTL
   rule applies to them); fixed parts are not.

If any piece fails, the request fails with that piece's error, naming the piece; nothing is
stored under the whole text. The answer says how it was made: `X-Cache: HIT` when every piece
came from the cache, `MISS` when none did, `PARTIAL` otherwise, and `segments` = (hits, total).

`speak_stream` is the same for streamed responses: the pieces go out in order, each as soon as
it and those before it are ready, so the first byte waits for the first piece only.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator, Awaitable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from voicecache import codecs
from voicecache.cache.coalescing import Coalescer
from voicecache.cache.lookup import stored_stream
from voicecache.cache.policy import CacheControl
from voicecache.cache.segments.join import join, place
from voicecache.cache.segments.split import Pause, Piece, split_text
from voicecache.cache.segments.templates import Template, match_any
from voicecache.cache.tiers.tiered import TieredCache
from voicecache.codecs import Audio, AudioFormat
from voicecache.errors import VoicecacheError
from voicecache.model import (
    GatewayObserver,
    Plan,
    SegmentMode,
    SpeechRequest,
    SpeechResult,
    SpeechStream,
    Status,
)

T = TypeVar("T")
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """The segment settings (`VOICECACHE_SEGMENT*`, `[[templates]]`, `segments` per engine)."""

    mode: SegmentMode = "off"
    engine_modes: Mapping[str, SegmentMode] = field(default_factory=dict)
    min_chars: int = 6
    max_chars: int = 150
    pause: float = 0.12  # seconds of silence after a sentence
    comma_pause: float = 0.06  # after a comma of a long sentence (or a template's)
    templates: tuple[Template, ...] = ()
    # Pieces of one text in flight at once, per engine (its `max_concurrency`).
    concurrency: Mapping[str, int] = field(default_factory=dict)

    def pause_for(self, pause: Pause) -> float:
        return {"sentence": self.pause, "comma": self.comma_pause, "none": 0.0}[pause]


class SegmentGateway(Protocol):
    """What the speaker uses of the gateway it is composed on."""

    cache: TieredCache
    storage_codec: AudioFormat
    observer: GatewayObserver

    async def plan(self, request: SpeechRequest, tenant: str | None = None) -> Plan: ...

    async def speak_whole(
        self, request: SpeechRequest, *, tenant: str | None, control: CacheControl
    ) -> SpeechResult: ...

    async def cached(self, plan: Plan) -> SpeechResult | None: ...

    def lifetime(self, plan: Plan, control: CacheControl) -> tuple[bool, float | None]: ...

    async def store(
        self,
        plan: Plan,
        pcm: Audio,
        control: CacheControl,
        since: int | None = None,
        encoded: bytes | None = None,
    ) -> SpeechResult: ...


class SegmentSpeaker:
    """Speaks texts as segments for one gateway; see the module docstring."""

    def __init__(self, config: SegmentConfig) -> None:
        self.config = config
        # Identical segmented requests in flight share one assembly (their pieces would be
        # shared anyway; this spares the join and the encode).
        self._coalescer: Coalescer[SpeechResult] = Coalescer()

    def mode(self, plan: Plan) -> SegmentMode:
        """The sentence mode for `plan`: the request's, else its engine's, else the global."""
        if plan.request.segments is not None:
            return plan.request.segments
        return self.config.engine_modes.get(plan.engine.name, self.config.mode)

    def pieces(self, plan: Plan) -> list[Piece] | None:
        """The pieces `plan`'s text is spoken in, or None to speak it whole."""
        request = plan.request
        if request.segments == "off":
            return None
        pieces = match_any(
            self.config.templates,
            request.text,
            voice=request.voice,
            engine=plan.engine.name,
            emotion=request.emotion,
        )
        if pieces is None and self.mode(plan) == "sentence":
            pieces = split_text(
                request.text, min_chars=self.config.min_chars, max_chars=self.config.max_chars
            )
        return pieces if pieces is not None and len(pieces) > 1 else None

    async def speak(
        self,
        gateway: SegmentGateway,
        plan: Plan,
        tenant: str | None,
        control: CacheControl,
    ) -> SpeechResult | None:
        """Audio for `plan` made of segments, or None when it is to be spoken whole."""
        pieces = self.pieces(plan)
        if pieces is None:
            return None
        if not control.no_cache:
            whole = await gateway.cached(plan)
            if whole is not None:
                return whole
        since = gateway.cache.generation
        work_id = (
            f"{plan.key.variant_id(plan.request.format)}@{since}"
            f"/{int(control.no_cache)}{int(control.no_store)}{control.max_age}"
        )
        result, _ = await self._coalescer.run(
            work_id, lambda: self._assemble(gateway, plan, pieces, tenant, control, since)
        )
        return result

    async def speak_stream(
        self,
        gateway: SegmentGateway,
        plan: Plan,
        tenant: str | None,
        control: CacheControl,
    ) -> SpeechStream | None:
        """`speak` as a stream, or None when the text is to be spoken whole: the segments go
        out in order, each as soon as it (and every one before it) is ready, so the first
        byte waits for the first segment only. Returns once the first segment is ready (its
        failure is an ordinary error answer); a later failure breaks the stream off, and
        nothing is stored under the whole text. `X-Cache` and `X-Cache-Segments` count the
        segments found in the cache when the headers go out."""
        pieces = self.pieces(plan)
        if pieces is None:
            return None
        if not control.no_cache:
            whole = await gateway.cached(plan)
            if whole is not None:
                return stored_stream(whole)
        since = gateway.cache.generation
        speaker = _Pieces(self.config, gateway, plan, pieces, tenant, control)
        found: list[SpeechResult | None] = []
        for piece in pieces:
            part = await gateway.plan(speaker.request_for(piece), tenant)
            found.append(None if control.no_cache else await gateway.cached(part))
        hits = sum(result is not None for result in found)
        tasks = {
            index: asyncio.ensure_future(speaker.speak(index))
            for index, result in enumerate(found)
            if result is None
        }

        async def ready(index: int) -> tuple[SpeechResult, Audio]:
            result = found[index]
            if result is None:
                return await tasks[index]
            return await speaker.observed(pieces[index], result)

        try:
            first = await ready(0)
        except BaseException:
            await _cancel(tasks.values())
            raise
        store_control = speaker.store_control([])
        stored, expires_at = gateway.lifetime(plan, store_control)
        stream = SpeechStream(
            key=plan.key.digest,
            format=plan.request.format,
            status=_status(hits, len(pieces), []),
            tier=None,
            stored=stored,
            private=speaker.personal or plan.voice.tenant is not None,
            expires_at=expires_at,
            characters=len(plan.request.text),
            chunks=_empty(),
            segments=(hits, len(pieces)),
        )

        async def chunks() -> AsyncGenerator[bytes, None]:
            rate = first[1].sample_rate
            encoder = codecs.StreamEncoder(plan.request.format, rate)
            placed: list[npt.NDArray[np.int16]] = []
            statuses: list[Status] = []
            try:
                for index, piece in enumerate(pieces):
                    result, audio = first if index == 0 else await ready(index)
                    statuses.append(result.status)
                    last = index == len(pieces) - 1
                    pause = None if last else self.config.pause_for(piece.pause)
                    placed.append(place(audio, rate, first=index == 0, pause=pause))
                    data = (
                        encoder.write(placed[-1])
                        if encoder.cheap
                        else await asyncio.to_thread(encoder.write, placed[-1])
                    )
                    if data:
                        yield data
                tail, complete = await asyncio.to_thread(encoder.close)
                if tail:
                    yield tail
            finally:
                await _cancel(tasks.values())
            pcm = Audio(np.concatenate(placed), rate)
            whole = await gateway.store(plan, pcm, speaker.store_control(statuses), since, complete)
            stream.result = replace(
                whole, status=stream.status, tier=None, segments=stream.segments
            )

        stream.chunks = chunks()
        return stream

    async def _assemble(
        self,
        gateway: SegmentGateway,
        plan: Plan,
        pieces: list[Piece],
        tenant: str | None,
        control: CacheControl,
        since: int,
    ) -> SpeechResult:
        speaker = _Pieces(self.config, gateway, plan, pieces, tenant, control)
        rendered = await _all(speaker.speak(index) for index in range(len(pieces)))
        pauses = [self.config.pause_for(piece.pause) for piece in pieces[:-1]]
        pcm = await asyncio.to_thread(join, [audio for _, audio in rendered], pauses)
        statuses = [result.status for result, _ in rendered]
        hits = sum(1 for status in statuses if status in ("HIT", "STALE"))
        whole = await gateway.store(plan, pcm, speaker.store_control(statuses), since)
        status = _status(hits, len(pieces), statuses)
        return replace(whole, status=status, tier=None, segments=(hits, len(pieces)))


class _Pieces:
    """The pieces of one segmented request, each asked as a request of its own."""

    def __init__(
        self,
        config: SegmentConfig,
        gateway: SegmentGateway,
        plan: Plan,
        pieces: list[Piece],
        tenant: str | None,
        control: CacheControl,
    ) -> None:
        self.gateway = gateway
        self.plan = plan
        self.pieces = pieces
        self.tenant = tenant
        self.control = control
        self.limit = asyncio.Semaphore(
            config.concurrency.get(plan.engine.name, DEFAULT_CONCURRENCY)
        )
        # A personalized line never repeats whole: the request says so, or a template slot.
        self.personal = plan.request.personalized or any(piece.kind == "slot" for piece in pieces)

    def request_for(self, piece: Piece) -> SpeechRequest:
        """The request for `piece` alone, in the storage codec, never split again."""
        request = self.plan.request
        return replace(
            request,
            text=piece.text,
            format=self.gateway.storage_codec,
            segments="off",
            # Slots are the personal part; fixed template parts are shared by everyone.
            personalized=piece.kind == "slot"
            or (piece.kind == "sentence" and request.personalized),
        )

    async def speak(self, index: int) -> tuple[SpeechResult, Audio]:
        """Piece `index` through the gateway (at most `limit` at once), observed, decoded."""
        piece = self.pieces[index]
        async with self.limit:
            try:
                result = await self.gateway.speak_whole(
                    self.request_for(piece), tenant=self.tenant, control=self.control
                )
            except VoicecacheError as exc:
                self.gateway.observer.segment_done("ERROR", len(piece.text))
                raise _failed(exc, index, len(self.pieces), piece.text) from exc
        return await self.observed(piece, result)

    async def observed(self, piece: Piece, result: SpeechResult) -> tuple[SpeechResult, Audio]:
        self.gateway.observer.segment_done(result.status, len(piece.text))
        return result, await asyncio.to_thread(codecs.decode, result.data, result.format)

    def store_control(self, statuses: list[Status]) -> CacheControl:
        """How to store the whole: not at all when personalized or made of stale pieces
        (stale audio must not live on as fresh)."""
        if self.personal or "STALE" in statuses:
            return replace(self.control, no_store=True)
        return self.control


def _status(hits: int, total: int, statuses: list[Status]) -> Status:
    if hits == total:
        return "STALE" if "STALE" in statuses else "HIT"
    return "MISS" if hits == 0 else "PARTIAL"


async def _empty() -> AsyncGenerator[bytes, None]:
    return
    yield b""  # an async generator that yields nothing


async def _all(work: Iterable[Awaitable[T]]) -> list[T]:
    """Run every awaitable concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        await _cancel(tasks)
        raise


async def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what still runs of `tasks` and wait for it (their errors are not news)."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _failed(error: VoicecacheError, index: int, total: int, text: str) -> VoicecacheError:
    """`error` (same class, status and retry hints) with a detail naming the failed piece. A
    copy: the original may be shared with coalesced requests that are not segmented."""
    shown = text if len(text) <= 40 else f"{text[:40]}…"
    failed = copy.copy(error)
    failed.detail = f"segment {index + 1} of {total} ({shown!r}) failed: {error.detail}"
    failed.args = (failed.detail,)
    return failed
