"""What an upstream TTS engine is asked (`Engine`, `SynthesisJob`, `Reference`, `VoiceInfo`),
and a request resolved against one engine and one voice (`ResolvedVoice`, `Plan`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, ClassVar

from voicecache.codecs import Audio
from voicecache.keys import CacheKey
from voicecache.model.requests import SpeechRequest

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
