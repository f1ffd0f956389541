"""Purges and sweeps across every tier, including a real Redis server and S3 (moto)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cache.invalidation.test_purge import CORPUS, NOW, entry, remaining
from tests.servers import MotoS3Server
from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import purge
from voicecache.cache.invalidation.sweeper import Sweeper, SweepLease
from voicecache.cache.tiers import DiskTier, MemoryTier, TieredCache
from voicecache.cache.tiers.redis import RedisTier
from voicecache.cache.tiers.s3 import S3Tier
from voicecache.cluster.redis import RedisHandle

pytestmark = [pytest.mark.redis, pytest.mark.s3]


@pytest.fixture
async def cache(
    tmp_path: Path, redis_url: str, s3_server: MotoS3Server, s3_bucket: str
) -> AsyncIterator[TieredCache]:
    tiers = [
        MemoryTier(1 << 24, "lru"),
        # Generous timeouts: a loaded test machine must not turn into a failed write.
        RedisTier(RedisHandle.from_url(redis_url, timeout=10.0), clock=lambda: NOW),
        DiskTier(tmp_path / "disk", 1 << 24),
        S3Tier(
            s3_bucket,
            prefix="purge",
            endpoint_url=s3_server.endpoint_url,
            region=s3_server.region,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            connect_timeout=10.0,
            read_timeout=30.0,
            clock=lambda: NOW,
        ),
    ]
    made = TieredCache(tiers, clock=lambda: NOW)
    try:
        for name, fields in CORPUS.items():
            for tier in tiers:  # directly, so a failed write fails loudly here
                await tier.set(*entry(name, **fields))
        for tier in made.tiers:
            assert await remaining(tier) == set(CORPUS), tier.name
        # As the first sweep does once per store: index what was stored before the index.
        for tier in tiers:
            if isinstance(tier, RedisTier | S3Tier):
                await tier.adopt()
        yield made
    finally:
        await made.aclose()


def scans(redis_url: str) -> int:
    """SCAN commands the real Redis server has run so far."""
    client = redis.Redis.from_url(redis_url)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_scan", {}).get("calls", 0))


@pytest.mark.parametrize(
    ("conditions", "removed"),
    [
        ({"voice": "en"}, {"en-event", "en-plain"}),
        ({"tag": "event"}, {"en-event", "fr-event"}),
        ({"voice": "fr", "tag": "story"}, {"fr-event"}),
    ],
)
async def test_purge_by_voice_or_tag_in_every_tier_without_scanning_redis(
    cache: TieredCache, redis_url: str, conditions: dict[str, str], removed: set[str]
) -> None:
    before = scans(redis_url)
    report = await purge(cache, PurgeFilter.create(now=NOW, **conditions))
    assert scans(redis_url) == before  # Redis answered from its voice/tag index
    assert not report.errors
    for tier in cache.tiers:
        assert await remaining(tier) == set(CORPUS) - removed, tier.name
        assert report.tiers[tier.name].entries == len(removed), tier.name
        assert report.tiers[tier.name].bytes >= 1000 * len(removed), tier.name
    assert set(report.tiers) == {"memory", "redis", "disk", "s3"}


async def test_purge_by_age_and_expiry_in_every_tier(cache: TieredCache, redis_url: str) -> None:
    before = scans(redis_url)
    old = await purge(cache, PurgeFilter.create(now=NOW, older_than="7d", voice="fr"))
    assert {name: r.entries for name, r in old.tiers.items()} == dict.fromkeys(old.tiers, 1)
    expired = await purge(cache, PurgeFilter.create(now=NOW, expired=True))
    assert expired.entries == 4
    assert scans(redis_url) == before  # the index answered age and expiry too
    for tier in cache.tiers:
        assert await remaining(tier) == set(CORPUS) - {"fr-old", "cmn-expired"}, tier.name


async def test_sweeper_clears_old_generations_from_redis_and_s3(cache: TieredCache) -> None:
    sweeper = Sweeper(cache, lambda: {"emotivoice": "emotivoice-1"}, 300, lambda: NOW)
    report = await sweeper.sweep()
    assert {name: r.entries for name, r in report.tiers.items()} == {
        "memory": 1,
        "redis": 1,
        "disk": 1,
        "s3": 1,
    }
    for tier in cache.tiers:
        assert "emo-old-model" not in await remaining(tier)


async def test_one_replica_per_interval_sweeps_redis_and_s3(cache: TieredCache) -> None:
    redis_tier = cache.tiers[1]
    versions = {"emotivoice": "emotivoice-1"}
    sweepers = [
        Sweeper(cache, lambda: versions, 300, lambda: NOW, SweepLease(None, redis_tier.redis))
        for _ in range(2)
    ]
    first = await sweepers[0].sweep()
    second = await sweepers[1].sweep()
    assert set(first.tiers) == {"memory", "redis", "disk", "s3"}
    assert set(second.tiers) == {"memory"}  # the shared stores were leased to the first
