"""A small circuit breaker, so requests never wait on a backend that is known to be down.

Closed: every call goes through. After `failures` consecutive failures the circuit opens and
`allow()` says no for `cooldown` seconds, so callers skip the backend at once instead of each
waiting for a timeout. Then it is half-open: exactly one caller is let through as a probe; its
success closes the circuit, its failure opens it for another cooldown. The clock is injected so
tests need no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


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
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.consecutive_failures = 0
        self.opened = 0  # how many times the circuit opened (for stats)
        self._open_until: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        if self._open_until is None:
            return "closed"
        return "open" if self.clock() < self._open_until or self._probing else "half-open"

    def allow(self) -> bool:
        """Whether to call the backend now. In half-open state only the first caller may."""
        if self._open_until is None:
            return True
        if self._probing or self.clock() < self._open_until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        """The call worked: close the circuit."""
        self.consecutive_failures = 0
        self._open_until = None
        self._probing = False

    def failure(self) -> None:
        """The call failed: open the circuit after enough failures in a row (or a failed probe)."""
        self.consecutive_failures += 1
        if self._probing or self.consecutive_failures >= self.threshold:
            if self._open_until is None or self._probing:
                self.opened += 1
            self._open_until = self.clock() + self.cooldown
            self._probing = False

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled): let the next caller probe."""
        self._probing = False
