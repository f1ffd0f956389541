"""Behaviour specific to the Redis tier: expiry, index sets, hash tags, corruption and the
circuit breaker, against real redis-server processes (single node and a 3-master Cluster)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import redis
import redis.asyncio as aioredis

from tests.cache.tiers.test_contract import make_entry
from tests.servers import RedisCluster, RedisServer
from voicecache.bootstrap import build_redis, build_tiers
from voicecache.cache.tiers import Entry
from voicecache.cache.tiers.redis import RedisTier
from voicecache.circuit import CircuitBreaker
from voicecache.cluster.fill_lock import RedisFillLock
from voicecache.cluster.redis import RedisHandle, make_client, parse_redis_url
from voicecache.errors import ConfigError, StorageError
from voicecache.settings import Settings

pytestmark = pytest.mark.redis

NOW = 1_700_000_000.0


def with_tags(entry: Entry, *tags: str) -> Entry:
    return Entry(entry.data, replace(entry.meta, tags=tags))


def entry_id(n: int, fmt: str = "flac") -> str:
    return f"{n:02x}" * 32 + f".{fmt}"


@pytest.fixture
async def tier(redis_url: str) -> AsyncIterator[RedisTier]:
    made = RedisTier(RedisHandle.from_url(redis_url, prefix="t", timeout=2.0), clock=lambda: NOW)
    yield made
    await made.aclose()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


async def test_expiry_is_stale_until_and_pinned_never_expires(
    tier: RedisTier, raw: redis.Redis
) -> None:
    await tier.set(entry_id(1), make_entry("01" * 32, b"a", expires_at=NOW + 90))  # +10 grace
    ttl_ms = raw.pttl(tier.key(entry_id(1)))
    assert 99_000 < ttl_ms <= 100_000
    await tier.set(entry_id(1), make_entry("01" * 32, b"a", expires_at=None))
    assert raw.pttl(tier.key(entry_id(1))) == -1  # overwriting as pinned drops the TTL


async def test_entry_past_its_grace_is_not_stored(tier: RedisTier, raw: redis.Redis) -> None:
    await tier.set(entry_id(2), make_entry("02" * 32, b"old", expires_at=NOW + 90))
    await tier.set(entry_id(2), make_entry("02" * 32, b"old", expires_at=NOW - 11))
    assert raw.exists(tier.key(entry_id(2))) == 0
    assert await tier.get(entry_id(2)) is None


async def test_keys_are_prefixed_and_hash_tagged(tier: RedisTier, raw: redis.Redis) -> None:
    await tier.set(entry_id(3), make_entry("03" * 32, b"x"))
    assert raw.exists(f"t:e:{{{'03' * 32}}}.flac") == 1
    assert [k async for k in _ids(tier)] == [entry_id(3)]


async def _ids(tier: RedisTier) -> AsyncIterator[str]:
    async for found, _ in tier.scan():
        yield found


async def test_find_by_voice_and_tag_uses_the_index(tier: RedisTier, raw: redis.Redis) -> None:
    await tier.set(entry_id(4), make_entry("04" * 32, b"x"))  # voice en, tags a, b
    await tier.set(entry_id(5, "mp3"), make_entry("05" * 32, b"y"))
    await tier.set(entry_id(6), with_tags(make_entry("06" * 32, b"z"), "c"))
    assert await tier.find(voice="en") == sorted([entry_id(4), entry_id(5, "mp3"), entry_id(6)])
    assert await tier.find(tag="a") == sorted([entry_id(4), entry_id(5, "mp3")])
    assert await tier.find(voice="en", tag="c") == [entry_id(6)]
    assert await tier.find(voice="fr") == []
    assert await tier.find() is None  # nothing asked: not indexed, caller scans

    assert await tier.delete(entry_id(4)) > 0
    assert raw.zscore(tier.index_key("tag", "a"), entry_id(4)) is None
    assert await tier.find(tag="a") == [entry_id(5, "mp3")]

    # An entry Redis dropped on its own (eviction) leaves a stale member: find skips and
    # removes it.
    raw.delete(tier.key(entry_id(5, "mp3")))
    assert await tier.find(tag="a") == []
    assert raw.zcard(tier.index_key("tag", "a")) == 0


async def test_index_members_past_their_grace_are_pruned_on_write(
    tier: RedisTier, raw: redis.Redis
) -> None:
    await tier.set(entry_id(7), make_entry("07" * 32, b"x", expires_at=NOW + 1))
    tier.clock = lambda: NOW + 100  # entry 7 is past stale_until now
    assert await tier.find(voice="en") == []
    await tier.set(entry_id(8), make_entry("08" * 32, b"y", expires_at=NOW + 1000))
    members = raw.zrange(tier.index_key("voice", "en"), 0, -1)
    assert members == [entry_id(8).encode()]


async def test_corrupt_values_are_dropped(tier: RedisTier, raw: redis.Redis) -> None:
    await tier.set(entry_id(9), make_entry("09" * 32, b"good audio"))
    key = tier.key(entry_id(9))
    blob = bytearray(raw.get(key) or b"")
    blob[-2] ^= 0xFF
    raw.set(key, bytes(blob))
    assert await tier.get(entry_id(9)) is None
    assert raw.exists(key) == 0
    assert tier.corrupt == 1


def test_url_forms() -> None:
    assert parse_redis_url("redis+cluster://h:7000/0") == ("redis://h:7000/0", True)
    assert parse_redis_url("rediss+cluster://h:7000") == ("rediss://h:7000", True)
    assert parse_redis_url("unix:///run/redis.sock") == ("unix:///run/redis.sock", False)
    assert parse_redis_url("redis://h", cluster=True) == ("redis://h", True)


def test_tiers_from_settings(tmp_path: os.PathLike[str]) -> None:
    settings = Settings(data_dir=tmp_path, tiers="memory,redis,s3", redis_url="redis://x:1")
    with pytest.raises(ConfigError, match="VOICECACHE_S3_BUCKET"):
        build_tiers(settings, build_redis(settings))
    settings = Settings(data_dir=tmp_path, tiers="memory,redis")
    with pytest.raises(ConfigError, match="VOICECACHE_REDIS_URL"):
        build_redis(settings)
    settings = Settings(
        data_dir=tmp_path, tiers="redis", redis_url="redis+cluster://127.0.0.1:1", redis_prefix="p"
    )
    (made,) = build_tiers(settings, build_redis(settings))
    assert isinstance(made, RedisTier) and made.redis.cluster and made.prefix == "p"


# -- failures ------------------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may kill, stop and restart without disturbing the session's."""
    with RedisServer() as server:
        yield server


async def test_circuit_skips_a_dead_server_then_probes_and_recovers(
    own_redis: RedisServer,
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown=5.0, clock=lambda: now[0])
    tier = RedisTier(RedisHandle(make_client(own_redis.url, timeout=0.5), breaker=breaker))
    try:
        await tier.set(entry_id(10), make_entry("0a" * 32, b"kept"))
        own_redis.kill()
        for _ in range(3):
            with pytest.raises(StorageError):
                await tier.get(entry_id(10))
        assert breaker.state == "open" and tier.redis.errors == 3
        started = time.perf_counter()
        for _ in range(50):  # the circuit is open: no request touches the network
            assert await tier.get(entry_id(10)) is None
            await tier.set(entry_id(11), make_entry("0b" * 32, b"dropped"))
        assert time.perf_counter() - started < 0.05
        assert tier.redis.skipped == 100 and tier.redis.errors == 3

        own_redis.start()  # empty again: persistence is off
        now[0] += 5.0  # cooldown over: the next call probes, succeeds, closes the circuit
        await tier.set(entry_id(10), make_entry("0a" * 32, b"again"))
        assert breaker.state == "closed"
        got = await tier.get(entry_id(10))
        assert got is not None and got.data == b"again"
    finally:
        await tier.aclose()


async def test_a_hung_server_costs_one_timeout_per_request_until_the_circuit_opens(
    own_redis: RedisServer,
) -> None:
    tier = RedisTier(
        RedisHandle(make_client(own_redis.url, timeout=0.1), breaker=CircuitBreaker(3, cooldown=60))
    )
    pid = own_redis.pid
    assert pid is not None
    await tier.set(entry_id(12), make_entry("0c" * 32, b"x"))
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        for _ in range(20):
            with contextlib.suppress(StorageError):
                await tier.get(entry_id(12))
        elapsed = time.perf_counter() - started
        # 3 failing calls, each at most timeout × 2 attempts; then 17 instant skips.
        assert elapsed < 3 * 0.1 * 2 + 0.3
        assert tier.redis.errors == 3 and tier.redis.skipped == 17
    finally:
        os.kill(pid, signal.SIGCONT)
        await tier.aclose()


# -- cluster -------------------------------------------------------------------------------------


@pytest.fixture
async def cluster_tier(redis_cluster: RedisCluster) -> AsyncIterator[RedisTier]:
    redis_cluster.flushall()
    made = RedisTier(
        RedisHandle.from_url(f"redis+cluster://127.0.0.1:{redis_cluster.port}", timeout=2.0)
    )
    yield made
    await made.aclose()


async def test_cluster_keeps_every_key_of_an_entry_in_one_slot(
    cluster_tier: RedisTier, redis_cluster: RedisCluster
) -> None:
    digest = "ab" * 32
    keys = [
        cluster_tier.key(f"{digest}.flac"),
        cluster_tier.key(f"{digest}.mp3"),
        cluster_tier.key(f"{digest}.opus"),
        RedisFillLock(cluster_tier.redis).lock_key(digest),
    ]
    async with aioredis.Redis.from_url(redis_cluster.url) as node:
        slots = {await node.execute_command("CLUSTER", "KEYSLOT", key) for key in keys}
    assert len(slots) == 1


async def test_cluster_scan_and_index_cover_every_master(
    cluster_tier: RedisTier, redis_cluster: RedisCluster
) -> None:
    ids = [entry_id(n) for n in range(30)]
    for n, made in enumerate(ids):
        await cluster_tier.set(made, make_entry(f"{n:02x}" * 32, b"audio%d" % n))
    per_node = []
    for node in redis_cluster.nodes:
        with redis.Redis(host=node.host, port=node.port) as client:
            per_node.append(len(list(client.scan_iter(match="vc:e:*"))))
    assert sum(per_node) == 30 and all(count > 0 for count in per_node)
    assert sorted([found async for found in _ids(cluster_tier)]) == sorted(ids)
    assert await cluster_tier.find(voice="en", tag="a") == sorted(ids)
    assert (await cluster_tier.stats()).entries == 30
