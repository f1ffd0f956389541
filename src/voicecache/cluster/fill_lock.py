"""Coalescing across replicas: one engine call per new line, however many gateways ask at once.

Inside one process the `Coalescer` already turns concurrent identical misses into one fill.
Across replicas, each process's fill first takes a short-lived lock in Redis:

- `SET <prefix>:lock:{<digest>} <token> NX PX <lock_ttl>`: the replica that gets it calls the
  engine, stores the audio, and releases the lock with a token-checked Lua script (it never
  deletes a lock that expired and was taken over by someone else). While the synthesis runs the
  holder extends the lock every `lock_ttl / 3`, so a slow engine does not lose it.
- Every other replica polls (bounded, backing off from 20 ms to 250 ms): is the audio in the
  cache now? Then it is served from there. Is the lock free? Then it tries to take it — which is
  how a waiter takes over when the holder died (its lock simply expires).
- Waiting is bounded by `lock_wait`; after that the waiter calls the engine itself.

Redis trouble never blocks a request: the lock shares the process's Redis handle and circuit
breaker, and any Redis error (or an open circuit) means "no lock", i.e. plain local coalescing.
The lock key carries the same `{<digest>}` hash tag as the entries, so on a Cluster it lives
in their slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from voicecache.cluster.redis import RedisHandle
from voicecache.errors import StorageError
from voicecache.model import Acquired

T = TypeVar("T")
log = logging.getLogger(__name__)

# Delete the lock only when it still holds our token.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Extend the lock only when it still holds our token.
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class _RedisLease:
    """A lock held in Redis, kept alive until released."""

    def __init__(self, owner: RedisFillLock, key: str, token: str) -> None:
        self.owner = owner
        self.key = key
        self.token = token
        self._keeper = asyncio.ensure_future(self._keep_alive())

    async def _keep_alive(self) -> None:
        ttl_ms = int(self.owner.ttl * 1000)
        while True:
            await asyncio.sleep(self.owner.ttl / 3)
            try:
                await self.owner.redis.guard(
                    "lock extend",
                    lambda: self.owner.redis.client.eval(_EXTEND, 1, self.key, self.token, ttl_ms),
                )
            except StorageError:
                return  # Redis trouble: the lock will expire on its own

    async def release(self) -> None:
        self._keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keeper
        with contextlib.suppress(StorageError):
            await self.owner.redis.guard(
                "lock release",
                lambda: self.owner.redis.client.eval(_RELEASE, 1, self.key, self.token),
            )


class RedisFillLock:
    """`SET NX PX` fill locks on the shared Redis handle, waiting by bounded polling."""

    def __init__(
        self,
        redis: RedisHandle,
        ttl: float = 30.0,
        wait: float = 35.0,
        *,
        poll_min: float = 0.02,
        poll_max: float = 0.25,
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.wait = wait
        self.poll_min = poll_min
        self.poll_max = poll_max
        # Counters for stats and tests.
        self.acquired = 0
        self.waited = 0
        self.taken_over = 0
        self.timeouts = 0
        self.skipped = 0

    def lock_key(self, digest: str) -> str:
        """`<prefix>:lock:{<digest>}`: the hash tag puts the lock in the Cluster slot of the
        line's entries."""
        return self.redis.key("lock", f"{{{digest}}}")

    async def _try_lock(self, key: str, token: str) -> bool:
        result = await self.redis.guard(
            "lock",
            lambda: self.redis.client.set(key, token, nx=True, px=int(self.ttl * 1000)),
        )
        return bool(result)

    async def acquire(self, digest: str, filled: Callable[[], Awaitable[T | None]]) -> Acquired[T]:
        """Take the lock for `digest`, or wait until `filled()` returns a result (another
        replica stored the audio), or until the lock is free to take over, or `wait` ends."""
        key = self.lock_key(digest)
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.wait
        delay = self.poll_min
        try:
            if await self._try_lock(key, token):
                self.acquired += 1
                return Acquired(lease=_RedisLease(self, key, token))
            self.waited += 1
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.timeouts += 1
                    log.warning("waited %.1fs for another replica to fill %s", self.wait, digest)
                    return Acquired()
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 1.5, self.poll_max)
                result = await filled()
                if result is not None:
                    return Acquired(result=result)
                if await self._try_lock(key, token):
                    # The holder released without storing (engine failed) or died.
                    self.acquired += 1
                    self.taken_over += 1
                    return Acquired(lease=_RedisLease(self, key, token))
        except StorageError:
            # Redis down or circuit open: coalesce locally only.
            self.skipped += 1
            return Acquired()
