"""Rate limits per API key: requests per second, and synthesized characters per minute.

Requests are counted on arrival (hits and misses alike: a hit is cheap but not free);
characters only when the engine is really called (a miss), because that is what costs money.
Both are fixed windows: a counter that expires one window after its first use.

With `redis_url` set the counters live in Redis (one small Lua script: check, INCRBY, PEXPIRE),
so every replica shares them. When Redis fails, limits fall back to in-process counters for a
cooldown rather than failing requests or letting traffic through unlimited.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from voicecache.bounded import BoundedDict, sizeof_str
from voicecache.cluster.rate_counters import SharedCounters
from voicecache.errors import RateLimited, StorageError
from voicecache.security.auth import Principal, current_principal

log = logging.getLogger(__name__)


class LocalCounters:
    """Fixed-window counters in this process, one per bucket (key, or client address without
    keys), bounded by `max_buckets` and `max_bytes`: a flood of new addresses makes the
    counters that started longest ago go first (a restarted window moves to the end)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_buckets: int = 100_000,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.clock = clock
        self._windows: BoundedDict[str, tuple[float, int]] = BoundedDict(
            max_buckets, max_bytes, _bucket_size
        )

    @property
    def buckets(self) -> int:
        return len(self._windows)

    @property
    def bytes(self) -> int:
        return self._windows.bytes

    def take(self, key: str, cost: int, limit: int, window: float) -> float | None:
        """Count `cost` against `key`; None when admitted, else seconds until it may retry."""
        now = self.clock()
        found = self._windows.get(key)
        started, used = (now, 0) if found is None else found
        if now - started >= window:
            started, used = now, 0
            self._windows.pop(key)  # a new window: re-inserted below, as the newest
        if used > 0 and used + cost > limit:
            return started + window - now
        self._windows[key] = (started, used + cost)
        return None


def _bucket_size(key: str, value: tuple[float, int]) -> int:
    return sizeof_str(key) + 64 + 24 + 32  # the key, the tuple, its float and int


class RateLimits:
    """The limits of `Settings` applied per key (per client address without keys)."""

    def __init__(
        self,
        rps: float = 0.0,
        chars_per_minute: int = 0,
        shared: SharedCounters | None = None,
        local: LocalCounters | None = None,
    ) -> None:
        self.rps = rps
        self.chars_per_minute = chars_per_minute
        self.shared = shared
        self.local = local or LocalCounters()
        # Fractional rates (0.5/s) become one request per 1/rps seconds.
        if rps >= 1:
            self._request_limit, self._request_window = math.floor(rps), 1.0
        elif rps > 0:
            self._request_limit, self._request_window = 1, 1.0 / rps
        else:
            self._request_limit, self._request_window = 0, 0.0

    async def request(self, principal: Principal, client: str | None = None) -> None:
        """Count one request; raises `RateLimited` (429 with Retry-After) over the limit."""
        if self._request_limit <= 0:
            return
        bucket = f"rps:{_bucket(principal, client)}"
        waited = await self._take(bucket, 1, self._request_limit, self._request_window)
        if waited is not None:
            raise RateLimited(
                f"rate limit: at most {self.rps:g} requests per second for this key", waited
            )

    async def characters(self, principal: Principal | None, count: int) -> None:
        """Count characters about to be synthesized (a miss); raises `RateLimited` when the
        per-minute budget is spent."""
        if self.chars_per_minute <= 0 or principal is None:
            return
        bucket = f"chars:{_bucket(principal, None)}"
        waited = await self._take(bucket, count, self.chars_per_minute, 60.0)
        if waited is not None:
            raise RateLimited(
                f"rate limit: at most {self.chars_per_minute} synthesized characters per "
                "minute for this key (cached lines are not limited)",
                waited,
            )

    async def before_engine(self, plan: Any) -> None:
        """The gateway's admission hook: charge the miss's characters to the caller of the
        current request (set by the security middleware; none for the CLI)."""
        await self.characters(current_principal.get(), len(plan.job.text))

    async def _take(self, key: str, cost: int, limit: int, window: float) -> float | None:
        if self.shared is not None:
            try:
                return await self.shared.take(key, cost, limit, window)
            except StorageError as exc:  # Redis down: limit per process, never fail requests
                log.warning("rate limits fall back to in-process counters: %s", exc.detail)
        return self.local.take(key, cost, limit, window)

    async def aclose(self) -> None:
        """Nothing to close: shared counters use the process's Redis handle."""


def _bucket(principal: Principal, client: str | None) -> str:
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    return f"anon:{client or 'local'}"
