"""The small protocol every upstream TTS engine implements.

An engine turns normalized text into PCM audio. It knows its name, the model version that goes
into cache keys, and the voices and emotions it accepts. Engines know nothing about caching,
HTTP clients of voicecache, retries or metrics: resilience wraps engines in one place
(`engines/resilience.py`) and the gateway strings the steps together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicecache.codecs import Audio


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
    """Base class for engines. Subclasses set `name` and `model_version` in `__init__`."""

    name: str
    model_version: str

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

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """Release connections and threads."""
