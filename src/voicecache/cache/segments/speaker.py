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
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from voicecache import codecs
from voicecache.cache.coalescing import Coalescer
from voicecache.cache.policy import CacheControl
from voicecache.cache.segments.join import join
from voicecache.cache.segments.split import Pause, Piece, split_text
from voicecache.cache.segments.templates import Template, match_any
from voicecache.cache.tiers.tiered import TieredCache
from voicecache.codecs import Audio, AudioFormat
from voicecache.errors import VoicecacheError
from voicecache.model import GatewayObserver, Plan, SegmentMode, SpeechRequest, SpeechResult, Status

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

    async def speak_whole(
        self, request: SpeechRequest, *, tenant: str | None, control: CacheControl
    ) -> SpeechResult: ...

    async def cached(self, plan: Plan) -> SpeechResult | None: ...

    async def store(
        self, plan: Plan, pcm: Audio, control: CacheControl, since: int
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

    async def _assemble(
        self,
        gateway: SegmentGateway,
        plan: Plan,
        pieces: list[Piece],
        tenant: str | None,
        control: CacheControl,
        since: int,
    ) -> SpeechResult:
        request = plan.request
        limit = asyncio.Semaphore(
            self.config.concurrency.get(plan.engine.name, DEFAULT_CONCURRENCY)
        )

        async def speak_piece(index: int, piece: Piece) -> tuple[SpeechResult, Audio]:
            part = replace(
                request,
                text=piece.text,
                format=gateway.storage_codec,
                segments="off",
                # Slots are the personal part; fixed template parts are shared by everyone.
                personalized=piece.kind == "slot"
                or (piece.kind == "sentence" and request.personalized),
            )
            async with limit:
                try:
                    result = await gateway.speak_whole(part, tenant=tenant, control=control)
                except VoicecacheError as exc:
                    gateway.observer.segment_done("ERROR", len(piece.text))
                    raise _failed(exc, index, len(pieces), piece.text) from exc
            gateway.observer.segment_done(result.status, len(piece.text))
            return result, await asyncio.to_thread(codecs.decode, result.data, result.format)

        rendered = await _all(speak_piece(index, piece) for index, piece in enumerate(pieces))
        pauses = [self.config.pause_for(piece.pause) for piece in pieces[:-1]]
        pcm = await asyncio.to_thread(join, [audio for _, audio in rendered], pauses)
        statuses = [result.status for result, _ in rendered]
        hits = sum(1 for status in statuses if status in ("HIT", "STALE"))
        status: Status = "PARTIAL"
        if hits == len(pieces):
            status = "STALE" if "STALE" in statuses else "HIT"
        elif hits == 0:
            status = "MISS"
        personal = request.personalized or any(piece.kind == "slot" for piece in pieces)
        if personal or "STALE" in statuses:
            # A personalized line never repeats whole; stale pieces must not live on as fresh.
            control = replace(control, no_store=True)
        whole = await gateway.store(plan, pcm, control, since)
        return replace(whole, status=status, tier=None, segments=(hits, len(pieces)))


async def _all(work: Iterable[Awaitable[T]]) -> list[T]:
    """Run every awaitable concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _failed(error: VoicecacheError, index: int, total: int, text: str) -> VoicecacheError:
    """`error` (same class, status and retry hints) with a detail naming the failed piece. A
    copy: the original may be shared with coalesced requests that are not segmented."""
    shown = text if len(text) <= 40 else f"{text[:40]}…"
    failed = copy.copy(error)
    failed.detail = f"segment {index + 1} of {total} ({shown!r}) failed: {error.detail}"
    failed.args = (failed.detail,)
    return failed
