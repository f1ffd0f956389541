"""The one Redis handle of a process, shared by everything that talks to Redis.

`RedisHandle` is one client (one connection pool, or one Redis Cluster client), one key prefix
and one circuit breaker. `bootstrap.build` makes at most one per process and hands it to the
Redis tier, the cross-replica fill lock, the purge feed, the sweep lease and the shared rate
counters, so they share connections and, above all, one verdict on whether Redis is up: when
the tier's reads start timing out, the fill lock stops waiting on Redis too.

Every operation goes through `guard`: while the circuit is open it raises `CircuitOpen` at once
(no request waits on a dead server); a failure is counted and raised as `StorageError`. Short
socket timeouts and one immediate retry (a pooled connection may have died with a restarted
server); redis-py reconnects by itself once the server is back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from voicecache.circuit import CircuitBreaker
from voicecache.errors import CircuitOpen, StorageError

T = TypeVar("T")

RedisClient = aioredis.Redis | RedisCluster

BACKEND_ERRORS = (RedisError, OSError, TimeoutError)


def parse_redis_url(url: str, cluster: bool = False) -> tuple[str, bool]:
    """Normalize a `redis+cluster://` / `rediss+cluster://` URL to what redis-py understands,
    and tell whether a cluster client is wanted."""
    for scheme in ("redis+cluster://", "rediss+cluster://"):
        if url.startswith(scheme):
            return scheme.replace("+cluster", "") + url[len(scheme) :], True
    return url, cluster


def make_client(url: str, *, cluster: bool = False, timeout: float = 0.25) -> RedisClient:
    """An asyncio Redis (or Redis Cluster) client with short timeouts and one quick retry."""
    url, cluster = parse_redis_url(url, cluster)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # One immediate retry: a pooled connection may be dead after a server restart, but
        # backing off inside a request would only make the request wait.
        "retry": Retry(NoBackoff(), 1),
    }
    if cluster:
        return RedisCluster.from_url(url, require_full_coverage=False, **common)
    return aioredis.Redis.from_url(url, **common)


class RedisHandle:
    """One client, one key prefix and one circuit breaker for every Redis user in a process."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "vc",
        breaker: CircuitBreaker | None = None,
        url: str = "",
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.breaker = breaker or CircuitBreaker(failures=3, cooldown=5.0)
        self.url = url
        self.errors = 0  # operations that failed
        self.skipped = 0  # operations not attempted because the circuit was open

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "vc",
        timeout: float = 0.25,
        breaker_cooldown: float = 5.0,
    ) -> RedisHandle:
        """A handle on a new client for `url` (`redis://`, `rediss://`, `redis+cluster://`)."""
        url, cluster = parse_redis_url(url, cluster)
        return cls(
            make_client(url, cluster=cluster, timeout=timeout),
            prefix=prefix,
            breaker=CircuitBreaker(failures=3, cooldown=breaker_cooldown),
            url=url,
        )

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def key(self, *parts: str) -> str:
        """`<prefix>:<part>:<part>…`, the one place keys get their prefix."""
        return ":".join((self.prefix, *parts))

    async def guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation through the circuit breaker.

        Raises `CircuitOpen` without calling Redis while the circuit is open, and
        `StorageError` (after counting it) when Redis fails."""
        if not self.breaker.allow():
            self.skipped += 1
            raise CircuitOpen(f"redis skipped for {what}: circuit open after repeated failures")
        try:
            return await self.breaker.run(work, BACKEND_ERRORS)
        except BACKEND_ERRORS as exc:
            self.errors += 1
            raise StorageError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
