"""Cross-replica fill locks (`distlock.py`) on a real redis-server: several `RedisFillLock`s with
their own clients stand for several replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.servers import RedisServer
from voicecache.bootstrap import build
from voicecache.cache.tiers.redis import RedisTier
from voicecache.circuit import CircuitBreaker
from voicecache.cluster.fill_lock import RedisFillLock
from voicecache.cluster.redis import RedisHandle, make_client
from voicecache.model import Acquired, SpeechRequest
from voicecache.settings import Settings

pytestmark = pytest.mark.redis

DIGEST = "5e" * 32
Replica = Callable[..., Awaitable[RedisFillLock]]


@pytest.fixture
async def replica(redis_url: str) -> AsyncIterator[Replica]:
    """Factory: a fill lock with its own Redis client, like one more gateway process."""
    tiers: list[RedisTier] = []

    async def make(ttl: float = 5.0, wait: float = 5.0, url: str = redis_url) -> RedisFillLock:
        tier = RedisTier(RedisHandle.from_url(url, timeout=1.0))
        tiers.append(tier)
        return RedisFillLock(tier.redis, ttl, wait, poll_min=0.01, poll_max=0.05)

    yield make
    for tier in tiers:
        await tier.aclose()


async def nothing() -> str | None:
    return None


async def test_second_replica_waits_for_the_first_ones_result(replica: Replica) -> None:
    first, second = await replica(), await replica()
    held = await first.acquire(DIGEST, nothing)
    assert held.lease is not None
    box: list[str] = []

    async def filled() -> str | None:
        return box[0] if box else None

    waiter = asyncio.ensure_future(second.acquire(DIGEST, filled))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    box.append("audio from the first replica")
    await held.lease.release()
    got = await asyncio.wait_for(waiter, 2)
    assert got.result == "audio from the first replica" and got.lease is None
    assert second.waited == 1 and second.acquired == 0


async def test_dead_holder_lock_expires_and_one_waiter_takes_over(replica: Replica) -> None:
    dead = await replica(ttl=0.3)
    held = await dead.acquire(DIGEST, nothing)
    assert held.lease is not None
    held.lease._keeper.cancel()  # type: ignore[attr-defined] # the process dies: no renewals

    waiters = [await replica(ttl=5.0) for _ in range(3)]
    box: list[str] = []

    async def filled() -> str | None:
        return box[0] if box else None

    async def replica_fill(lock: RedisFillLock) -> Acquired[str]:
        got = await lock.acquire(DIGEST, filled)
        if got.lease is not None:  # the new holder fills and releases
            box.append("filled by the new holder")
            await got.lease.release()
        return got

    started = time.perf_counter()
    results = await asyncio.gather(*(replica_fill(w) for w in waiters))
    assert len([r for r in results if r.lease is not None]) == 1  # exactly one took over …
    assert [r.result for r in results if r.lease is None] == ["filled by the new holder"] * 2
    assert 0.25 < time.perf_counter() - started < 2.0  # … once the dead lock expired
    assert sum(w.taken_over for w in waiters) == 1


async def test_holder_keeps_its_lock_alive_past_the_ttl(replica: Replica) -> None:
    holder, other = await replica(ttl=0.3), await replica(wait=0.6)
    held = await holder.acquire(DIGEST, nothing)
    assert held.lease is not None
    got = await other.acquire(DIGEST, nothing)  # 0.6 s = two TTLs: renewals must keep it
    assert got.lease is None and got.result is None
    assert other.timeouts == 1
    await held.lease.release()


async def test_release_never_deletes_someone_elses_lock(replica: Replica, redis_url: str) -> None:
    slow, fast = await replica(ttl=0.2), await replica(ttl=5.0)
    old = await slow.acquire(DIGEST, nothing)
    assert old.lease is not None
    old.lease._keeper.cancel()  # type: ignore[attr-defined]
    new = await fast.acquire(DIGEST, nothing)  # waits for the old lock to expire
    assert new.lease is not None
    await old.lease.release()  # too late: must leave the new holder's lock alone
    key = fast.lock_key(DIGEST)
    assert await fast.redis.client.get(key) == new.lease.token.encode()  # type: ignore[attr-defined]
    await new.lease.release()
    assert await fast.redis.client.exists(key) == 0


async def test_redis_down_means_no_lock_and_no_waiting() -> None:
    server = RedisServer().start()
    url = server.url
    server.close()
    tier = RedisTier(
        RedisHandle(make_client(url, timeout=0.2), breaker=CircuitBreaker(1, cooldown=60))
    )
    lock = RedisFillLock(tier.redis, 5.0, 5.0)
    try:
        started = time.perf_counter()
        for _ in range(3):
            got = await lock.acquire(DIGEST, nothing)
            assert got.lease is None and got.result is None
        assert time.perf_counter() - started < 1.0
        assert lock.skipped == 3 and tier.redis.errors == 1  # then the circuit skipped Redis
    finally:
        await tier.aclose()


async def test_two_gateways_sharing_redis_call_the_engine_once(
    redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, tiers="memory,redis", redis_url=redis_url, redis_timeout=2.0
    )
    gateways = [build(settings).gateway, build(settings).gateway]
    assert all(g.fill_lock is not None for g in gateways)
    request = SpeechRequest.create(text="One line, many replicas.", voice="en", format="mp3")
    try:
        results = await asyncio.gather(*(gateways[n % 2].speak(request) for n in range(40)))
        calls = sum(g.engines["espeak"].calls for g in gateways)
        assert calls == 1
        assert len({r.data for r in results}) == 1
        statuses = [r.status for r in results]
        assert statuses.count("MISS") == 1 and statuses.count("COALESCED") == 39
    finally:
        for gateway in gateways:
            await gateway.aclose()
