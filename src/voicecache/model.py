"""The value types and protocols every layer shares, so nobody imports the gateway for a type.

Read it top-down, the way a request travels:

- `SpeechRequest`: what a client asks for, validated and normalized at the edge;
- `Engine`, `SynthesisJob`, `Reference`, `VoiceInfo`: what an upstream TTS engine is asked;
- `ResolvedVoice`, `Plan`: a request resolved against one engine and one voice, with its
  `CacheKey` (built in `keys.py`);
- `Entry`, `EntryMeta`, `Tier`, `TierStats`: what a cache tier stores and the tier protocol;
- `SpeechResult`, `Status`: the answer, and how it was obtained; `SpeechStream`: the answer
  as a stream of bytes;
- `VoiceResolver`, `Admission`, `GatewayObserver`, `FillLock`: the collaborators the gateway
  is given by the composition root.

Two kinds of protocol, one definition each. `Engine` and `Tier` are small abstract base
classes: their implementations subclass them and inherit default behaviour (`accepts_voice`,
`key_options`, `touch`, `find`, `aclose`…), which a `typing.Protocol` could only offer through
a second, parallel base class. The gateway's collaborators are `Protocol`s: their
implementations live in higher layers (metrics, rate limits, the voice registry, Redis) and
share no code, so structural typing is all they need.

This module sits below every other layer: it imports only `codecs`, `errors` and `keys`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from voicecache import codecs
from voicecache.codecs import FORMATS, Audio, AudioFormat
from voicecache.errors import InvalidRequest, StorageError
from voicecache.keys import CacheKey as CacheKey  # re-exported: part of the model
from voicecache.keys import Normalization, normalize_text

T = TypeVar("T")

# -- the request --------------------------------------------------------------------------------

MIN_SPEED = 0.25
MAX_SPEED = 4.0
# `\Z`, not `$`: `$` also matches before a trailing newline ("en\n").
VOICE_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]{1,64}\Z")
EMOTION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
ENGINE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
MAX_TAGS = 16
# How a request's text may be cut into cached pieces (`cache/segments/`): `off` is exact.
SegmentMode = Literal["off", "sentence"]
# Raw text may be longer than the limit (normalization collapses white space), but not
# without bound: normalizing is work done before the limit can be checked.
RAW_TEXT_SLACK = 16
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(name: str, value: str) -> None:
    """Refuse strings that are not Unicode text: a lone surrogate (JSON's `\\ud800`, or an
    undecodable byte on the command line) cannot be encoded, hashed or spoken."""
    found = _SURROGATE.search(value)
    if found is not None:
        raise InvalidRequest(
            f"{name} contains a lone surrogate (U+{ord(found.group()):04X} at position "
            f"{found.start()}), which is not text",
            name,
        )


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """A validated, normalized request for speech.

    Built once at the edge (HTTP body, CLI arguments, a warm-up row) by `create`, which
    validates every field and normalizes the text. The engine always synthesizes the
    normalized text, so the audio stored under a key always matches that key."""

    text: str
    voice: str
    emotion: str = "neutral"
    speed: float = 1.0
    format: AudioFormat = "wav"
    engine: str | None = None
    tags: tuple[str, ...] = ()
    personalized: bool = False
    instructions: str | None = None
    segments: SegmentMode | None = None  # None: the engine's or the global setting decides

    @classmethod
    def create(
        cls,
        *,
        text: str,
        voice: str,
        emotion: str | None = None,
        speed: float | None = None,
        format: str | None = None,
        engine: str | None = None,
        tags: Iterable[str] | str | None = None,
        personalized: bool = False,
        instructions: str | None = None,
        segments: SegmentMode | None = None,  # checked at the edge (a Literal field)
        normalization: Normalization = "standard",
        max_text_chars: int = 4000,
    ) -> SpeechRequest:
        """Validate and normalize; raises `InvalidRequest` with a readable detail."""
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string", "text")
        if len(text) > max_text_chars * RAW_TEXT_SLACK:
            raise InvalidRequest(
                f"text is {len(text)} characters; the limit is {max_text_chars}", "text"
            )
        _check_text("text", text)
        # The limit applies to what the engine would speak: NFKC can expand a character up
        # to 18 times (U+FDFA), so the raw length says little.
        normalized = normalize_text(text, normalization)
        if len(normalized) > max_text_chars:
            raise InvalidRequest(
                f"text is {len(normalized)} characters after normalization; the limit is "
                f"{max_text_chars}",
                "text",
            )
        if not normalized.strip():
            raise InvalidRequest("text is empty", "text")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise InvalidRequest("instructions must be a string", "instructions")
            _check_text("instructions", instructions)
        if not isinstance(voice, str) or not VOICE_PATTERN.match(voice):
            raise InvalidRequest(
                "voice must be 1-64 characters of letters, digits, '_', '.', '+' or '-'", "voice"
            )
        emotion = (emotion or "neutral").strip().lower()
        if not EMOTION_PATTERN.match(emotion):
            raise InvalidRequest("emotion must be 1-32 letters, digits, '_' or '-'", "emotion")
        speed = 1.0 if speed is None else speed
        if isinstance(speed, bool) or not isinstance(speed, int | float) or speed != speed:
            raise InvalidRequest("speed must be a number", "speed")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}", "speed")
        fmt = (format or "wav").lower()
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of: {', '.join(FORMATS)}", "format")
        if engine and (not isinstance(engine, str) or not ENGINE_PATTERN.match(engine)):
            raise InvalidRequest("engine must be 1-64 letters, digits, '_', '.' or '-'", "engine")
        return cls(
            text=normalized,
            voice=voice,
            emotion=emotion,
            speed=round(float(speed), 2),
            format=fmt,
            engine=engine or None,
            tags=_parse_tags(tags),
            personalized=bool(personalized),
            instructions=instructions or None,
            segments=segments,
        )


def _parse_tags(tags: Iterable[str] | str | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    cleaned = sorted({str(tag).strip() for tag in items if str(tag).strip()})
    if len(cleaned) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags", "tags")
    for tag in cleaned:
        if not TAG_PATTERN.match(tag):
            raise InvalidRequest(
                f"tag {tag!r} must be 1-64 letters, digits, '_', '.', ':' or '-'", "tags"
            )
    return tuple(cleaned)


# -- engines ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice an engine offers."""

    id: str
    name: str
    language: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Reference:
    """A decrypted reference sample for voice cloning, handed to the engine only in memory."""

    voice_id: str
    version: str
    audio: Audio
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SynthesisJob:
    """Everything an engine needs for one synthesis."""

    text: str
    voice: str
    emotion: str = "neutral"
    speed: float = 1.0
    instructions: str | None = None
    reference: Reference | None = None


class Engine(ABC):
    """An upstream TTS engine: turns normalized text into PCM audio.

    It knows its name, the model version that goes into cache keys, and the voices and
    emotions it accepts; nothing about caching, HTTP clients, retries or metrics (resilience
    wraps engines in one place, `engines/resilience.py`). Subclasses set `name` and
    `model_version` in `__init__`. Built-in and third-party engines are built alike through
    the entry-point group `voicecache.engines` (`engines/registry.py`)."""

    name: str
    model_version: str
    # True for engines that run inside this process: no network to fail, so `build_engines`
    # wraps only the others in `ResilientEngine` (timeouts, retries, breaker, queue).
    in_process: ClassVar[bool] = False

    def __init__(self) -> None:
        # Incremented once per real synthesis; tests and benchmarks assert on it.
        self.calls = 0

    @abstractmethod
    def voices(self) -> Sequence[VoiceInfo]:
        """The voices this engine accepts."""

    @abstractmethod
    def emotions(self) -> Sequence[str]:
        """The emotions this engine accepts (always including `neutral`)."""

    def accepts_voice(self, voice: str) -> bool:
        return any(info.id == voice for info in self.voices())

    def key_options(self, job: SynthesisJob) -> dict[str, Any]:
        """Engine-specific inputs that change the audio and so belong in the cache key."""
        return {"instructions": job.instructions} if job.instructions else {}

    def derives_speed(self, job: SynthesisJob) -> bool:
        """True if this engine makes `job.speed` by stretching its speed-1.0 render locally;
        the gateway then reuses the cached speed-1.0 audio instead of calling the engine."""
        return False

    @abstractmethod
    async def synthesize(self, job: SynthesisJob) -> Audio:
        """Synthesize `job.text`; raise `EngineError` (or a subclass) on failure."""

    async def probe(self) -> None:  # noqa: B027 - optional hook: nothing to check by default
        """Raise `EngineError` unless the engine can be reached now, without synthesizing (a
        connect and a cheap request): readiness checks and `voicecache doctor`."""

    async def stream(self, job: SynthesisJob) -> AsyncGenerator[Audio, None]:
        """Synthesize `job.text`, handing on PCM chunks (all at one sample rate) as they are
        made; their concatenation is the whole render. The default makes the whole render
        and yields it once: engines that answer whole files need nothing more. Consumers
        close the iterator (`contextlib.aclosing`) when they stop early."""
        yield await self.synthesize(job)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """Release connections and threads."""


@dataclass(frozen=True, slots=True)
class ResolvedVoice:
    """What a requested voice id means for one engine and one tenant.

    An uploaded voice's sample is decrypted only when a miss needs it: `load_reference` is
    called by the fill just before the engine, never on a hit."""

    engine_voice: str
    version: str = "builtin"
    tenant: str | None = None  # set for private voices: their audio is keyed per tenant
    load_reference: Callable[[], Awaitable[Reference]] | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A request resolved against an engine and a voice: everything needed to fill it."""

    request: SpeechRequest
    engine: Engine
    job: SynthesisJob
    key: CacheKey
    voice: ResolvedVoice


# -- what tiers store ---------------------------------------------------------------------------

# Tiers that persist bytes (disk, Redis) store `Entry.to_bytes()`: this magic, a length-prefixed
# JSON header and the audio, with a checksum of the audio in the header that `from_bytes`
# verifies, so a corrupt entry is dropped and never served.
MAGIC = b"VC1\n"
_HEADER_LENGTH = struct.Struct(">I")


def checksum(data: bytes) -> str:
    """A fast 128-bit digest of the audio, verified on every read from a persistent tier."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """The header stored with each audio entry."""

    key: str
    format: AudioFormat
    sample_rate: int
    duration: float
    size: int
    checksum: str
    created: float
    expires_at: float | None  # None: pinned, never expires
    stale_until: float | None  # expires_at plus grace; None when pinned
    engine: str = ""
    model_version: str = ""
    voice: str = ""
    voice_version: str = ""
    emotion: str = ""
    speed: float = 1.0
    text: str = ""
    tags: tuple[str, ...] = ()
    tenant: str | None = None
    personalized: bool = False
    sliding: bool = False
    ttl: float | None = None
    max_expires_at: float | None = None

    @property
    def pinned(self) -> bool:
        return self.expires_at is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryMeta:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["tags"] = tuple(known.get("tags") or ())
        return cls(**known)

    def with_expiry(self, expires_at: float | None, grace: float) -> EntryMeta:
        stale_until = None if expires_at is None else expires_at + grace
        return replace(self, expires_at=expires_at, stale_until=stale_until)


@dataclass(frozen=True, slots=True)
class Entry:
    """Audio bytes and their header."""

    data: bytes
    meta: EntryMeta

    def to_bytes(self) -> bytes:
        header = json.dumps(self.meta.to_json(), separators=(",", ":")).encode()
        return b"".join((MAGIC, _HEADER_LENGTH.pack(len(header)), header, self.data))

    @classmethod
    def from_bytes(cls, blob: bytes, *, verify: bool = True) -> Entry:
        """Parse and verify; raises `StorageError` for anything corrupt. `verify=False` checks
        the header and the audio's length but not its checksum (`Tier.read`)."""
        meta = read_header(blob)
        start = len(MAGIC) + _HEADER_LENGTH.size + _HEADER_LENGTH.unpack_from(blob, 4)[0]
        data = blob[start:]
        if len(data) != meta.size or (verify and checksum(data) != meta.checksum):
            raise StorageError(f"checksum mismatch for {meta.key}")
        return cls(data, meta)


def read_header(blob: bytes) -> EntryMeta:
    """Parse only the header of a serialized entry (cheap: used by scans)."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _HEADER_LENGTH.size:
        raise StorageError("not a voicecache entry")
    (length,) = _HEADER_LENGTH.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _HEADER_LENGTH.size
    try:
        return EntryMeta.from_json(json.loads(blob[start : start + length]))
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"corrupt entry header: {exc}") from exc


@dataclass(slots=True)
class TierStats:
    """Counters a tier reports for metrics, `voicecache stats` and the dashboard."""

    name: str
    entries: int = 0
    bytes: int = 0
    capacity_bytes: int | None = None
    evictions: int = 0
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Tier(ABC):
    """A cache tier. Storage ids are `<key digest>.<format>`.

    Tiers keep an entry until `meta.stale_until` (expiry plus the grace period); whether an
    entry is fresh or stale is decided by `TieredCache`, not by each tier."""

    name: str

    @abstractmethod
    async def get(self, entry_id: str) -> Entry | None:
        """The entry, or None when absent (or corrupt, which the tier also deletes)."""

    async def read(self, entry_id: str) -> Entry | None:
        """`get` with cheap integrity checks (header and length, not the checksum), for the
        fast lane's hits: `TieredCache.get(cheap=True)` verifies each stored copy's checksum
        once per process instead. Default: `get`."""
        return await self.get(entry_id)

    @abstractmethod
    async def set(self, entry_id: str, entry: Entry) -> None:
        """Store or overwrite; the tier may decline (admission, size) silently."""

    @abstractmethod
    async def delete(self, entry_id: str) -> int:
        """Remove; returns the bytes freed (0 when absent)."""

    @abstractmethod
    def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every stored id with its header (for purge, sweeps and inspection); tiers implement
        it as an async generator (`async def scan(self): ... yield ...`)."""

    @abstractmethod
    async def stats(self) -> TierStats:
        """Entries, bytes and counters."""

    async def touch(self, entry_id: str, meta: EntryMeta) -> None:
        """Replace the header of a stored entry (sliding expiry). Default: rewrite it."""
        entry = await self.get(entry_id)
        if entry is not None:
            await self.set(entry_id, Entry(entry.data, meta))

    async def find(self, *, voice: str | None = None, tag: str | None = None) -> list[str] | None:
        """Ids of entries with this voice and/or tag (both: entries with both), from an index.

        None means "not indexed here": the caller scans instead. Tiers with an index (Redis)
        may return ids that have expired or been evicted since; callers tolerate those."""
        return None

    async def delete_matching(self, scope: Any) -> tuple[int, int] | None:
        """Delete what a purge or sweep scope covers (`cache/tiers/scopes.py`), found through
        the tier's own index; returns (entries, bytes freed).

        None means "no index answers this here": the caller uses `find` or `scan` instead."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, files and threads."""


# -- the answer ---------------------------------------------------------------------------------

# HIT: from a tier; MISS: this request called the engine; COALESCED: another request (here or
# on another replica) called it; STALE: a stale copy, served after an engine error or while it
# is refreshed in the background; PARTIAL: a segmented text, some segments from the cache.
Status = Literal["HIT", "MISS", "COALESCED", "STALE", "PARTIAL"]


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
    segments: tuple[int, int] | None = None  # a segmented text: (hits, total) segments

    @classmethod
    def of(
        cls, entry: Entry, status: Status, tier: str | None, stored: bool = True
    ) -> SpeechResult:
        """The result serving `entry`."""
        meta = entry.meta
        return cls(entry.data, meta.format, meta.key, status, tier, meta, stored)

    @property
    def content_type(self) -> str:
        return codecs.CONTENT_TYPES[self.format]

    @property
    def etag(self) -> str:
        return f'"{self.key}.{self.format}"'


@dataclass(slots=True)
class SpeechStream:
    """Audio for a request as a stream of bytes (`Gateway.speak_stream`).

    Everything a response's headers need is known before the first byte: how the audio is
    obtained (`status`, `tier`), its `key` and `format`, and whether and how long it may be
    kept (`stored`, `private`, `expires_at`: None is pinned). `chunks` yields the bytes, and
    raises when the audio breaks off before it is complete (an upstream stream cut short):
    the bytes already yielded must then not be taken for a whole file. `result` is the
    complete audio once known: at once for stored audio, at the end of a live render."""

    key: str
    format: AudioFormat
    status: Status
    tier: str | None
    stored: bool
    private: bool
    expires_at: float | None
    characters: int
    chunks: AsyncGenerator[bytes, None]
    result: SpeechResult | None = None
    segments: tuple[int, int] | None = None  # as in `SpeechResult`

    @property
    def content_type(self) -> str:
        return codecs.CONTENT_TYPES[self.format]


# -- the gateway's collaborators ----------------------------------------------------------------


class VoiceResolver(Protocol):
    """Maps a requested voice id to an engine voice (built-in or uploaded)."""

    async def resolve(self, voice: str, engine: Engine, tenant: str | None) -> ResolvedVoice: ...


class Admission(Protocol):
    """May refuse a miss just before the engine is called (e.g. a characters-per-minute
    rate limit: misses cost money, hits do not)."""

    async def before_engine(self, plan: Plan) -> None: ...

    async def aclose(self) -> None: ...


class GatewayObserver(Protocol):
    """Receives what happened, for metrics and logs. Must be cheap and never raise."""

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None: ...

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None: ...

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None: ...

    def segment_done(self, status: str, characters: int) -> None: ...


class Lease(Protocol):
    """A held fill lock."""

    async def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Acquired(Generic[T]):
    """What `FillLock.acquire` found: a lease to fill under, or the result someone else made,
    or neither (lock unavailable or wait over: fill without a lock)."""

    lease: Lease | None = None
    result: T | None = None


class FillLock(Protocol):
    """A cross-process lock around filling one cache key (`cluster.fill_lock.RedisFillLock`):
    one replica calls the engine, the others wait for `filled()` to find its audio."""

    async def acquire(
        self, digest: str, filled: Callable[[], Awaitable[T | None]]
    ) -> Acquired[T]: ...
