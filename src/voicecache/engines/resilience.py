"""Resilience for every engine call, in one place: `ResilientEngine` wraps any `Engine`.

Per call, in this order:

1. Circuit breaker: after `breaker_failures` consecutive failed attempts the engine is
   `open` and calls fail at once with 503 (`Retry-After` = the rest of the cool-down). After
   `breaker_cooldown` seconds it is `half_open`: one probe call goes through; success closes
   the breaker, failure opens it for another cool-down.
2. Back-pressure: at most `max_concurrency` calls run upstream at once (protects a GPU box);
   up to `max_queue` more wait for a slot, at most `queue_timeout` seconds; beyond that a
   call fails at once with 503 and a `Retry-After` estimated from recent call times.
3. Timeouts and retries: each attempt is capped at `attempt_timeout` seconds (on top of the
   engine's own connect/read timeouts); errors the engine marks `retryable` (connection
   errors, timeouts, 5xx) are tried again up to `attempts` attempts in all, after an
   exponential backoff with jitter (`base_delay` · 2^n, ±50 %); 4xx and undecodable answers
   are never retried.

What counts as a breaker failure: an attempt that ends in an `EngineError` other than an
upstream 4xx (a 4xx proves the engine is up; our request was the problem). Calls refused by
the breaker or the queue never reach the engine and count nothing against it.

Counters for metrics (plain attributes, read them at scrape time): `calls` (real upstream
calls, from the wrapped engine), `attempts`, `retries`, `failures`, `timeouts`,
`rejected_open`, `rejected_queue`, `breaker_transitions` (`{"open": n, "half_open": n,
"closed": n}`), and the gauges `state`, `in_flight`, `queued`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from voicecache.codecs import Audio
from voicecache.errors import EngineError, EngineTimeout, EngineUnavailable
from voicecache.model import Engine, SynthesisJob, VoiceInfo
from voicecache.settings import EngineConfig

BreakerState = Literal["closed", "open", "half_open"]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """Limits of one engine. See the module docstring for what each does."""

    attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    attempt_timeout: float | None = 60.0
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    max_concurrency: int = 4
    max_queue: int = 100
    queue_timeout: float | None = 60.0

    @classmethod
    def from_engine_config(cls, config: EngineConfig) -> ResilienceConfig:
        """`retries` in settings is the number of attempts in all (3: one try, two retries)."""
        return cls(
            attempts=max(1, config.retries),
            base_delay=config.retry_base_delay,
            attempt_timeout=config.timeout,
            breaker_failures=max(1, config.breaker_failures),
            breaker_cooldown=config.breaker_cooldown,
            max_concurrency=max(1, config.max_concurrency),
            max_queue=max(0, config.max_queue),
            queue_timeout=config.timeout,
        )


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.consecutive_failures = 0
        self.transitions: dict[BreakerState, int] = {"open": 0, "half_open": 0, "closed": 0}
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """`open` turns into `half_open` once the cool-down has passed."""
        if self._state == "open" and self.clock() >= self._opened_at + self.cooldown:
            return "half_open"
        return self._state

    def retry_after(self) -> float:
        """Seconds until a call may be let through again."""
        return max(1.0, self._opened_at + self.cooldown - self.clock())

    def admit(self, engine: str) -> bool:
        """Let a call through, or raise `EngineUnavailable`. True if the call is the probe."""
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._probing:
            self._move("half_open")
            self._probing = True
            return True
        raise EngineUnavailable(
            f"engine {engine} is failing; circuit open, retrying in {self.retry_after():.0f} s",
            self.retry_after(),
        )

    def succeeded(self, probe: bool) -> None:
        self.consecutive_failures = 0
        if probe:
            self._probing = False
        if self._state != "closed":
            self._move("closed")

    def failed(self, probe: bool) -> None:
        self.consecutive_failures += 1
        if probe:
            self._probing = False
        if probe or (self._state == "closed" and self.consecutive_failures >= self.failures):
            self._opened_at = self.clock()
            self._move("open")

    def abandoned(self, probe: bool) -> None:
        """A call ended without a verdict (cancelled, or a bug): free the probe slot."""
        if probe:
            self._probing = False

    def _move(self, state: BreakerState) -> None:
        if state != self._state:
            self._state = state
            self.transitions[state] += 1


class ResilientEngine(Engine):
    """Any engine with timeouts, retries, a circuit breaker and a bounded queue."""

    def __init__(
        self,
        inner: Engine,
        config: ResilienceConfig | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        # No super().__init__(): `calls` is the wrapped engine's own counter.
        self.inner = inner
        self.name = inner.name
        self.model_version = inner.model_version
        self.config = config or ResilienceConfig()
        self.breaker = CircuitBreaker(
            self.config.breaker_failures, self.config.breaker_cooldown, clock
        )
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        # Recent seconds per call, for the Retry-After of a full queue.
        self._typical_call = 1.0
        self.attempts = 0
        self.retries = 0
        self.failures = 0
        self.timeouts = 0
        self.rejected_open = 0
        self.rejected_queue = 0
        self.in_flight = 0
        self.queued = 0

    # -- what the gateway reads ----------------------------------------------------------------

    @property
    def calls(self) -> int:  # type: ignore[override]
        return self.inner.calls

    @property
    def state(self) -> BreakerState:
        return self.breaker.state

    @property
    def breaker_transitions(self) -> dict[BreakerState, int]:
        return self.breaker.transitions

    def voices(self) -> Sequence[VoiceInfo]:
        return self.inner.voices()

    def emotions(self) -> Sequence[str]:
        return self.inner.emotions()

    def accepts_voice(self, voice: str) -> bool:
        return self.inner.accepts_voice(voice)

    def key_options(self, job: SynthesisJob) -> dict[str, Any]:
        return self.inner.key_options(job)

    def derives_speed(self, job: SynthesisJob) -> bool:
        return self.inner.derives_speed(job)

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- the call ------------------------------------------------------------------------------

    async def synthesize(self, job: SynthesisJob) -> Audio:
        await self._acquire_slot()
        self.in_flight += 1
        try:
            return await self._with_retries(job)
        finally:
            self.in_flight -= 1
            self._slots.release()

    async def _acquire_slot(self) -> None:
        if self._slots.locked() and self.queued >= self.config.max_queue:
            self.rejected_queue += 1
            raise EngineUnavailable(
                f"engine {self.name} is busy: {self.config.max_concurrency} calls running "
                f"and {self.queued} queued",
                self._queue_retry_after(),
            )
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: returns at once, no timer needed
            return
        self.queued += 1
        try:
            async with asyncio.timeout(self.config.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            self.rejected_queue += 1
            raise EngineUnavailable(
                f"engine {self.name} is busy: no free slot within {self.config.queue_timeout:g} s",
                self._queue_retry_after(),
            ) from None
        finally:
            self.queued -= 1

    async def _with_retries(self, job: SynthesisJob) -> Audio:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(job)
            except EngineError as exc:
                if not exc.retryable or attempt >= self.config.attempts:
                    raise
            self.retries += 1
            await self._sleep(self._backoff(attempt))

    async def _attempt(self, job: SynthesisJob) -> Audio:
        try:
            probe = self.breaker.admit(self.name)
        except EngineUnavailable:
            self.rejected_open += 1
            raise
        self.attempts += 1
        started = self._clock()
        try:
            async with asyncio.timeout(self.config.attempt_timeout):
                audio = await self.inner.synthesize(job)
        except TimeoutError:
            self.timeouts += 1
            self.failures += 1
            self.breaker.failed(probe)
            raise EngineTimeout(
                f"engine {self.name} did not answer within {self.config.attempt_timeout:g} s"
            ) from None
        except EngineError as exc:
            if isinstance(exc, EngineTimeout):
                self.timeouts += 1
            if _proves_engine_up(exc):
                self.breaker.succeeded(probe)
            else:
                self.failures += 1
                self.breaker.failed(probe)
            raise
        except BaseException:
            self.breaker.abandoned(probe)  # cancelled, or a bug: no verdict on the engine
            raise
        self.breaker.succeeded(probe)
        elapsed = self._clock() - started
        self._typical_call = 0.8 * self._typical_call + 0.2 * elapsed
        return audio

    def _backoff(self, attempt: int) -> float:
        """base · 2^(attempt-1), capped, times a jitter factor in [0.5, 1.5)."""
        delay = min(self.config.max_delay, self.config.base_delay * 2 ** (attempt - 1))
        return delay * (0.5 + self._jitter())

    def _queue_retry_after(self) -> float:
        waves = (self.queued + 1) / self.config.max_concurrency
        return max(1.0, self._typical_call * waves)


def _proves_engine_up(exc: EngineError) -> bool:
    """An upstream 4xx: the engine answered, our request was the problem."""
    status = exc.upstream_status
    return status is not None and 400 <= status < 500
