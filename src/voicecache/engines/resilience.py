"""Resilience for every engine call, in one place: `ResilientEngine` wraps any `Engine`.

Per call, in this order:

1. Circuit breaker (`voicecache.circuit`, the one the tiers use too): after
   `breaker_failures` consecutive failed attempts the engine is `open` and calls fail at
   once with 503 (`Retry-After` = the rest of the cool-down). After `breaker_cooldown`
   seconds it is `half_open`: one probe call goes through; success closes the breaker,
   failure opens it for another cool-down.
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

Streams (`stream`, for streamed misses) get the same: one slot for the whole stream, the
breaker's verdict when it ends, and `attempt_timeout` as a deadline for the whole stream
(applied to each wait for the next chunk, never to the time the consumer spends). A stream
is retried only before its first chunk was handed on: after that a retry would splice two
different renders into one response, so the error goes to the caller.

Counters for metrics (plain attributes, read them at scrape time): `calls` (real upstream
calls, from the wrapped engine), `attempts`, `retries`, `failures`, `timeouts`,
`rejected_open`, `rejected_queue`, `breaker_transitions` (`{"open": n, "half_open": n,
"closed": n}`), and the gauges `state`, `in_flight`, `queued`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from voicecache.circuit import CircuitBreaker, State
from voicecache.codecs import Audio
from voicecache.engines.spec import EngineSpec
from voicecache.errors import EngineError, EngineTimeout, EngineUnavailable
from voicecache.model import Engine, SynthesisJob, VoiceInfo

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
    def from_spec(cls, spec: EngineSpec) -> ResilienceConfig:
        """`retries` in a spec is the number of attempts in all (3: one try, two retries)."""
        return cls(
            attempts=max(1, spec.retries),
            base_delay=spec.retry_base_delay,
            attempt_timeout=spec.timeout,
            breaker_failures=max(1, spec.breaker_failures),
            breaker_cooldown=spec.breaker_cooldown,
            max_concurrency=max(1, spec.max_concurrency),
            max_queue=max(0, spec.max_queue),
            queue_timeout=spec.timeout,
        )


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
    def state(self) -> State:
        return self.breaker.state

    @property
    def breaker_transitions(self) -> dict[State, int]:
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

    async def probe(self) -> None:
        # Straight to the engine: a probe is a question, not traffic for the breaker to judge.
        await self.inner.probe()

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

    async def stream(self, job: SynthesisJob) -> AsyncGenerator[Audio, None]:
        await self._acquire_slot()
        self.in_flight += 1
        try:
            attempt = 0
            while True:
                attempt += 1
                handed_on = False
                try:
                    async with aclosing(self._stream_attempt(job)) as chunks:
                        async for chunk in chunks:
                            handed_on = True
                            yield chunk
                    return
                except EngineError as exc:
                    if handed_on or not exc.retryable or attempt >= self.config.attempts:
                        raise
                self.retries += 1
                await self._sleep(self._backoff(attempt))
        finally:
            self.in_flight -= 1
            self._slots.release()

    async def _stream_attempt(self, job: SynthesisJob) -> AsyncGenerator[Audio, None]:
        """One upstream stream, as `_attempt` is one upstream call."""
        probe = self._allow()
        self.attempts += 1
        started = self._clock()
        timeout = self.config.attempt_timeout
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        verdict = False
        try:
            async with aclosing(self.inner.stream(job)) as chunks:
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        verdict = True
                        self._failed(None)
                        raise EngineTimeout(
                            f"engine {self.name} did not finish its stream within {timeout:g} s"
                        ) from None
                    except EngineError as exc:
                        verdict = True
                        self._failed(exc)
                        raise
                    yield chunk
            verdict = True
            self._succeeded(started)
        finally:
            if not verdict and probe:  # cancelled or left early: no verdict on the engine
                self.breaker.release_probe()

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
        probe = self._allow()
        self.attempts += 1
        started = self._clock()
        try:
            async with asyncio.timeout(self.config.attempt_timeout):
                audio = await self.inner.synthesize(job)
        except TimeoutError:
            self._failed(None)
            raise EngineTimeout(
                f"engine {self.name} did not answer within {self.config.attempt_timeout:g} s"
            ) from None
        except EngineError as exc:
            self._failed(exc)
            raise
        except BaseException:
            if probe:  # cancelled, or a bug: no verdict on the engine
                self.breaker.release_probe()
            raise
        self._succeeded(started)
        return audio

    def _allow(self) -> bool:
        """Pass the breaker or raise; returns whether this call is the half-open probe."""
        if not self.breaker.allow():
            self.rejected_open += 1
            retry_after = max(1.0, self.breaker.remaining_cooldown())
            raise EngineUnavailable(
                f"engine {self.name} is failing; circuit open, retrying in {retry_after:.0f} s",
                retry_after,
            )
        # Right after allow(): whether this call is the one probe. An attempt can outlive
        # the cool-down, so only the probe may free the probe slot when it is cancelled.
        return self.breaker.probing

    def _failed(self, exc: EngineError | None) -> None:
        """An attempt failed (`exc` None: it timed out here): count it, tell the breaker."""
        if exc is None or isinstance(exc, EngineTimeout):
            self.timeouts += 1
        if exc is not None and _proves_engine_up(exc):
            self.breaker.success()
            return
        self.failures += 1
        self.breaker.failure()

    def _succeeded(self, started: float) -> None:
        self.breaker.success()
        elapsed = self._clock() - started
        self._typical_call = 0.8 * self._typical_call + 0.2 * elapsed

    def _backoff(self, attempt: int) -> float:
        """base · 2^(attempt-1), capped, times a jitter factor in [0.5, 1.5)."""
        delay = min(self.config.max_delay, self.config.base_delay * 2.0 ** (attempt - 1))
        return delay * (0.5 + self._jitter())

    def _queue_retry_after(self) -> float:
        waves = (self.queued + 1) / self.config.max_concurrency
        return max(1.0, self._typical_call * waves)


def _proves_engine_up(exc: EngineError) -> bool:
    """An upstream 4xx: the engine answered, our request was the problem."""
    status = exc.upstream_status
    return status is not None and 400 <= status < 500
