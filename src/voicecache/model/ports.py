"""The collaborators the composition root gives the gateway: `VoiceResolver`, `Admission`,
`GatewayObserver`, `FillLock` (with `Lease`, `Acquired`). Their implementations live in higher
layers (the voice registry, rate limits, metrics, Redis) and share no code, so they are
`Protocol`s: structural typing is all they need."""

from __future__ import annotations

from collections.abc import (
    Awaitable,
    Callable,
)
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from voicecache.model.engines import Engine, Plan, ResolvedVoice
from voicecache.model.results import SpeechResult

T = TypeVar("T")

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
