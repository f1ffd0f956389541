"""A request pacer: at most `rate` operations per second, for long passes over remote stores.

A sweep of an S3 bucket without an index reads every object's header; paced, it costs the
bucket (and the gateway's event loop) a bounded, predictable load instead of a burst of
thousands of requests. The pacer reserves each caller's slot before it sleeps (the generic
cell rate algorithm), so concurrent callers share the rate instead of each getting it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """Lets at most `rate` calls of `wait()` through per second (`burst` at once after idling)."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = 1.0 / rate
        self.tolerance = max(0, burst - 1) * self.interval
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0  # theoretical arrival time of the next call
        self.calls = 0
        self.waited = 0.0  # seconds spent sleeping, in all

    async def wait(self) -> None:
        """Return when the next call may go (at once while under the rate)."""
        now = self.clock()
        arrival = max(self._next, now)
        self._next = arrival + self.interval
        self.calls += 1
        delay = arrival - self.tolerance - now
        if delay > 0:
            self.waited += delay
            await self.sleep(delay)
