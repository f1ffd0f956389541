"""Rate-limit counters shared by every replica through the process's Redis handle.

Fixed windows, one small Lua script per take (check, INCRBY, PEXPIRE), so replicas see one
count. Failures surface as `StorageError` (or `CircuitOpen` while Redis is being skipped):
`security.ratelimit.RateLimits` then counts in-process instead, rather than failing requests or
letting traffic through unlimited.
"""

from __future__ import annotations

import math

from voicecache.cluster.redis import RedisHandle

# KEYS[1] counter; ARGV cost, limit, window in ms. Returns -1 when admitted, else the
# milliseconds until the window ends. A request bigger than the whole limit is admitted into
# an empty window, so one long line is never refused forever.
_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if current > 0 and current + cost > tonumber(ARGV[2]) then
  return math.max(redis.call('PTTL', KEYS[1]), 1)
end
if redis.call('INCRBY', KEYS[1], cost) == cost then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return -1
"""


class SharedCounters:
    """Fixed-window counters in Redis under `<prefix>:rl:{<bucket>}`."""

    def __init__(self, redis: RedisHandle) -> None:
        self.redis = redis
        self._script = redis.client.register_script(_SCRIPT)

    async def take(self, key: str, cost: int, limit: int, window: float) -> float | None:
        """Count `cost` against `key`; None when admitted, else seconds until it may retry."""
        # The hash tag keeps the counter on one slot in a cluster.
        counter = self.redis.key("rl", f"{{{key}}}")
        waited = await self.redis.guard(
            "rate-limit",
            lambda: self._script(keys=[counter], args=[cost, limit, math.ceil(window * 1000)]),
        )
        return None if int(waited) < 0 else int(waited) / 1000
