"""The one circuit breaker, so no caller waits on a backend that is known to be down.

Used alike by the Redis and S3 tiers, the shared rate counters and every remote engine
(`engines/resilience.py`). Three states, spelled the same everywhere (metrics, `/healthz`,
the dashboard):

    closed ──`failures` in a row──▶ open ──`cooldown` passed──▶ half_open
       ▲                              ▲                             │
       │                              └─────── probe failed ────────┤
       └──────────────────────────── probe succeeded ───────────────┘

- `closed`: every call goes through; `failure()` counts consecutive failures.
- `open`: `allow()` says no for `cooldown` seconds, so callers skip the backend at once
  instead of each waiting for a timeout.
- `half_open`: the cooldown is over. Exactly one caller is let through as the probe; the
  others are refused until it has a verdict. Its `success()` closes the circuit, its
  `failure()` opens it for another cooldown, and `release_probe()` (the probe was cancelled:
  no verdict) lets the next caller probe instead.

Verdicts are not tied to callers: a call that started before the circuit opened and
succeeds late closes it (the backend works), and one that fails late while the circuit is
already open changes nothing (no new information, so the cooldown is not extended).

Counters for stats and metrics: `opened` (times the circuit opened) and `transitions`
(entries into each state; `half_open` counts probes let through). The clock is injected so
tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

T = TypeVar("T")
State = Literal["closed", "open", "half_open"]
STATES: tuple[State, ...] = ("closed", "open", "half_open")


class CircuitBreaker:
    """Counts consecutive failures of one backend and decides whether to call it."""

    def __init__(
        self,
        failures: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if cooldown < 0:
            raise ValueError("cooldown must not be negative")
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.consecutive_failures = 0
        self.transitions: dict[State, int] = dict.fromkeys(STATES, 0)
        self._state: State = "closed"  # "open" turns into "half_open" by time alone
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        if self._state == "open" and self.clock() >= self._open_until:
            return "half_open"
        return self._state

    @property
    def opened(self) -> int:
        """How many times the circuit opened."""
        return self.transitions["open"]

    @property
    def probing(self) -> bool:
        """Whether the half-open probe is out, waiting for its verdict."""
        return self._probing

    def remaining_cooldown(self) -> float:
        """Seconds until the next probe may go (0 when closed or half-open)."""
        if self._state == "closed":
            return 0.0
        return max(0.0, self._open_until - self.clock())

    def allow(self) -> bool:
        """Whether to call the backend now. In half-open state only the probe may."""
        if self._state == "closed":
            return True
        if self._probing or self.clock() < self._open_until:
            return False
        self._probing = True
        self._move("half_open")
        return True

    def success(self) -> None:
        """A call worked: close the circuit."""
        self.consecutive_failures = 0
        self._probing = False
        self._move("closed")

    def failure(self) -> None:
        """A call failed: open the circuit after `failures` in a row, or when the probe fails."""
        self.consecutive_failures += 1
        if self._probing or (
            self._state == "closed" and self.consecutive_failures >= self.threshold
        ):
            # From closed, or from half_open (the probe failed): always a real transition.
            self._probing = False
            self._open_until = self.clock() + self.cooldown
            self._state = "open"
            self.transitions["open"] += 1

    async def run(
        self,
        work: Callable[[], Awaitable[T]],
        failures: tuple[type[Exception], ...],
        answer: Callable[[Exception], bool] | None = None,
    ) -> T:
        """Run one call that `allow()` let through and give its verdict: success when it
        returns, or when it raises one of `failures` that `answer` accepts (the backend
        answered, e.g. "no such object"); failure for the other `failures`; none when it is
        cancelled (a cancelled probe frees the probe slot for the next caller) or raises
        anything else. Exceptions propagate unchanged, for the caller to translate."""
        probe = self.probing  # right after allow(): whether this call is the probe
        try:
            result = await work()
        except asyncio.CancelledError:
            if probe:
                self.release_probe()
            raise
        except failures as exc:
            if answer is not None and answer(exc):
                self.success()
            else:
                self.failure()
            raise
        self.success()
        return result

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let the next caller probe."""
        self._probing = False

    def _move(self, state: State) -> None:
        if state != self._state:
            self._state = state
            self.transitions[state] += 1
