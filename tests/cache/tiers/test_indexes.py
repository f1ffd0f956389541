"""Sweeps, purges and stats of the shared tiers read indexes, never every entry: Redis (one node
and a Cluster) through its index in Redis, S3 through its index in Redis, and S3 without Redis
through paged, paced and resumable listing passes. What each operation asks of the real
backend is recorded (Redis MONITOR, the S3 client's calls) and compared with what it matched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from tests.cache.tiers.counting import count_s3_calls, monitored
from tests.cache.tiers.test_contract import make_entry
from tests.servers import MotoS3Server, RedisCluster
from voicecache.cache.invalidation.filter import PurgeFilter, Unreachable
from voicecache.cache.tiers.pacing import Pacer
from voicecache.cache.tiers.redis import RedisTier
from voicecache.cache.tiers.s3 import LIFECYCLE_DAYS, LIFECYCLE_TAG, S3Tier
from voicecache.cluster.redis import RedisHandle
from voicecache.errors import StorageError
from voicecache.model import Entry

NOW = 1_700_000_000.0
CURRENT = {"espeak": "espeak-2"}


def ident(n: int) -> str:
    return f"{n:02x}" * 32 + ".flac"


def corpus() -> dict[str, Entry]:
    """30 entries: voices en and fr; some past their grace period at NOW + 500 (stale_until
    NOW + 310), some of an old model version, some pinned."""
    made: dict[str, Entry] = {}
    for n in range(30):
        voice = "fr" if n % 3 == 0 else "en"
        expires = NOW + 300 if n % 5 == 0 else NOW + 86400
        version = "espeak-1" if n % 7 == 0 else "espeak-2"
        made[ident(n)] = make_entry(
            ident(n)[:64],
            b"audio-%d" % n * 100,
            expires_at=None if n in (1, 2) else expires,
            voice=voice,
            tags=("event",) if n % 2 else (),
            engine="espeak",
            model_version=version,
        )
    return made


def unreachable(now: float) -> Unreachable:
    return Unreachable(CURRENT, now)


def covered(scope: Any, entries: dict[str, Entry]) -> set[str]:
    return {entry_id for entry_id, entry in entries.items() if scope.matches(entry_id, entry.meta)}


# -- Redis ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["single", "cluster"])
async def redis_setup(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[RedisTier, list[str], Clock]]:
    clock = Clock()
    if request.param == "single":
        url: str = request.getfixturevalue("redis_url")
        handle, urls = RedisHandle.from_url(url, timeout=5.0), [url]
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        handle = RedisHandle.from_url(cluster.url, cluster=True, timeout=5.0)
        urls = list(cluster.urls)
    tier = RedisTier(handle, clock=clock, audit_batch=5)
    await tier.adopt()
    for entry_id, entry in corpus().items():
        await tier.set(entry_id, entry)
    yield tier, urls, clock
    await handle.aclose()


def scans(urls: list[str]) -> int:
    total = 0
    for url in urls:
        with redis.Redis.from_url(url) as client:
            stats: dict[str, Any] = client.info("commandstats")
            total += sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                         for name in ("scan", "keys"))  # fmt: skip
    return total


@pytest.mark.redis
async def test_redis_purge_by_voice_touches_the_index_and_the_matched_entries_only(
    redis_setup: tuple[RedisTier, list[str], Clock],
) -> None:
    tier, urls, _ = redis_setup
    entries = corpus()
    scope = PurgeFilter.create(now=NOW, voice="fr")
    expected = covered(scope, entries)
    assert len(expected) == 10

    with monitored(urls) as commands:
        removed = await tier.delete_matching(scope)

    assert removed is not None and removed[0] == len(expected)
    assert removed[1] == sum(len(entries[i].to_bytes()) for i in expected)
    assert commands.keys_with(f"{tier.prefix}:e:") == {tier.key(i) for i in expected}
    assert not commands.named("SCAN", "KEYS", "GETRANGE", "GET")
    every_key = commands.keys_with(f"{tier.prefix}:")
    assert every_key - {tier.key(i) for i in expected} <= {
        k for k in every_key if k.startswith(f"{tier.prefix}:ix:")
    }
    assert await tier.find(voice="fr") == []
    assert len(await tier.find(voice="en") or []) == 20


@pytest.mark.redis
async def test_redis_sweep_touches_the_index_the_matched_entries_and_a_bounded_audit(
    redis_setup: tuple[RedisTier, list[str], Clock],
) -> None:
    tier, urls, clock = redis_setup
    entries = corpus()
    clock.now = NOW + 500  # the n % 5 == 0 entries are past their grace period now
    scope = unreachable(clock.now)
    expected = covered(scope, entries)
    assert 8 <= len(expected) < 30

    with monitored(urls) as commands:
        removed = await tier.delete_matching(scope)

    assert removed is not None and removed[0] == len(expected)
    entry_prefix = f"{tier.prefix}:e:"
    # Every entry key outside the audit's EXISTS checks belongs to a matched entry …
    assert commands.keys_with(entry_prefix, exclude=("EXISTS",)) == {tier.key(i) for i in expected}
    # … and the audit checked at most its batch of the others.
    assert len(commands.named("EXISTS")) <= tier.audit_batch
    assert not commands.named("SCAN", "KEYS", "GETRANGE", "GET")
    assert (await tier.stats()).entries == 30 - len(expected)
    # The emptied old generation is forgotten.
    assert await tier.index.generations() == [("espeak", "espeak-2")]


@pytest.mark.redis
async def test_redis_stats_read_counters_without_scanning(
    redis_setup: tuple[RedisTier, list[str], Clock],
) -> None:
    tier, urls, clock = redis_setup
    entries = corpus()
    before = scans(urls)
    stats = await tier.stats()
    assert stats.entries == 30
    assert stats.bytes == sum(len(entry.to_bytes()) for entry in entries.values())
    # An overwrite corrects the byte count; a delete takes its entry out.
    bigger = make_entry(ident(3)[:64], b"much longer audio" * 500, voice="fr")
    await tier.set(ident(3), bigger)
    await tier.delete(ident(4))
    stats = await tier.stats()
    assert stats.entries == 29
    assert stats.bytes == (
        sum(len(entry.to_bytes()) for entry in entries.values())
        - len(entries[ident(3)].to_bytes())
        + len(bigger.to_bytes())
        - len(entries[ident(4)].to_bytes())
    )
    # Entries Redis expired (past their grace period) drop out of the count at once.
    clock.now = NOW + 500
    alive = [i for i, e in entries.items() if e.meta.stale_until in (None, NOW + 86410)]
    assert (await tier.stats()).entries == len(set(alive) - {ident(4)}) == 23
    assert scans(urls) == before


@pytest.mark.redis
async def test_redis_entries_from_before_the_index_are_adopted_once(redis_url: str) -> None:
    handle = RedisHandle.from_url(redis_url, timeout=5.0)
    tier = RedisTier(handle, clock=lambda: NOW)
    entries = corpus()
    with redis.Redis.from_url(redis_url) as raw:
        # What an older voicecache stored: the entries and their voice/tag sets, no index.
        for entry_id, entry in entries.items():
            raw.set(tier.key(entry_id), entry.to_bytes())
            raw.zadd(tier.index_key("voice", entry.meta.voice), {entry_id: 2e9})
        assert (await tier.stats()).entries == 0  # not adopted yet
        first = scans([redis_url])
        report = await tier.delete_matching(unreachable(NOW))  # the sweeper adopts first
        assert scans([redis_url]) == first + 1  # one SCAN pass (a single call here)
        old = covered(unreachable(NOW), entries)
        assert report == (len(old), sum(len(entries[i].to_bytes()) for i in old))
        assert (await tier.stats()).entries == 30 - len(old)
        await tier.delete_matching(unreachable(NOW))
        assert scans([redis_url]) == first + 1  # never again

        # A replica that predates the index writes an entry after adoption: a purge by its
        # voice still finds it (its header is read, and it is indexed).
        late = make_entry("ee" * 32, b"late", voice="fr")
        raw.set(tier.key("ee" * 32 + ".flac"), late.to_bytes())
        raw.zadd(tier.index_key("voice", "fr"), {"ee" * 32 + ".flac": 2e9})
        removed = await tier.delete_matching(PurgeFilter.create(now=NOW, voice="fr"))
        assert removed is not None and removed[0] == 1 + sum(
            1 for i, e in entries.items() if e.meta.voice == "fr" and i not in old
        )
        assert raw.exists(tier.key("ee" * 32 + ".flac")) == 0
    await handle.aclose()


@pytest.mark.redis
async def test_redis_audit_drops_entries_redis_evicted(redis_url: str) -> None:
    handle = RedisHandle.from_url(redis_url, timeout=5.0)
    tier = RedisTier(handle, clock=lambda: NOW, audit_batch=1000)
    await tier.adopt()
    for entry_id, entry in corpus().items():
        await tier.set(entry_id, entry)
    with redis.Redis.from_url(redis_url) as raw:
        raw.delete(tier.key(ident(1)), tier.key(ident(5)))  # as maxmemory eviction would
    assert (await tier.stats()).entries == 30
    assert await tier.audit() == 2
    assert (await tier.stats()).entries == 28
    assert ident(1) not in (await tier.index.find(voice="en", tag=None))
    await handle.aclose()


# -- S3 ------------------------------------------------------------------------------------------


def s3_tier(server: MotoS3Server, bucket: str, **options: Any) -> S3Tier:
    return S3Tier(
        bucket,
        prefix="cold",
        endpoint_url=server.endpoint_url,
        region=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        **options,
    )


@pytest.fixture
async def indexed_s3(
    s3_server: MotoS3Server, s3_bucket: str, redis_url: str
) -> AsyncIterator[tuple[S3Tier, Clock]]:
    clock = Clock()
    handle = RedisHandle.from_url(redis_url, timeout=5.0)
    tier = s3_tier(s3_server, s3_bucket, redis=handle, clock=clock)
    await tier.adopt()
    for entry_id, entry in corpus().items():
        await tier.set(entry_id, entry)
    yield tier, clock
    await tier.aclose()
    await handle.aclose()


@pytest.mark.s3
@pytest.mark.redis
@pytest.mark.parametrize("what", ["voice", "sweep"])
async def test_s3_with_an_index_requests_only_the_matched_objects(
    indexed_s3: tuple[S3Tier, Clock], what: str
) -> None:
    tier, clock = indexed_s3
    entries = corpus()
    if what == "voice":
        scope: Any = PurgeFilter.create(now=NOW, voice="fr")
    else:
        clock.now = NOW + 500
        scope = unreachable(clock.now)
    expected = covered(scope, entries)
    calls = count_s3_calls(await tier.store.client())

    removed = await tier.delete_matching(scope)

    assert removed == (len(expected), sum(len(entries[i].to_bytes()) for i in expected))
    assert set(calls.operations()) == {"DeleteObjects"}  # no listing, no header reads
    assert sorted(calls.keys("DeleteObjects")) == sorted(tier.object_key(i) for i in expected)
    # One request deletes up to 1000 objects: one per index set read (a sweep reads two:
    # the expiry range and the old generation).
    requests = {"voice": 1, "sweep": 2}[what]
    assert len(calls.calls) == requests
    stats = await tier.stats()
    assert stats.entries == 30 - len(expected)
    assert len(calls.calls) == requests  # stats asked Redis, not S3


@pytest.mark.s3
@pytest.mark.redis
async def test_s3_objects_are_indexed_before_they_are_written(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    dead = RedisHandle.from_url("redis://127.0.0.1:1", timeout=0.2)
    tier = s3_tier(s3_server, s3_bucket, redis=dead)
    try:
        with pytest.raises(StorageError, match="index"):
            await tier.set(ident(1), corpus()[ident(1)])
        listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)
        assert listed.get("KeyCount", 0) == 0  # an object the index does not know: never
    finally:
        await tier.aclose()
        await dead.aclose()


class FakeTime:
    """A monotonic clock that sleeping advances: the pacer's waits, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.s3
async def test_s3_sweep_without_an_index_is_paged_paced_and_resumable(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    time_ = FakeTime()
    pacer = Pacer(10.0, clock=time_, sleep=time_.sleep)
    clock = Clock()
    tier = s3_tier(s3_server, s3_bucket, clock=clock, pacer=pacer, sweep_budget=12)
    tier.page_size = 5
    entries = corpus()
    try:
        for entry_id, entry in entries.items():
            await tier.set(entry_id, entry)
        clock.now = NOW + 500
        calls = count_s3_calls(await tier.store.client())
        scope = unreachable(NOW + 500)
        expected = covered(scope, entries)

        first = await tier.delete_matching(scope)
        # One pass: 2 pages of 5 (1 + 5 requests each) reach the budget of 12, then stop.
        assert calls.operations().count("ListObjectsV2") == 2
        assert calls.operations().count("GetObject") == 10 + 1  # headers + the cursor
        in_first = {i for i in sorted(entries)[:10] if i in expected}
        assert first == (len(in_first), sum(len(entries[i].to_bytes()) for i in in_first))
        # Paced: every request of the pass waited its turn at 10 per second.
        assert pacer.calls >= 12 and time_.now >= (pacer.calls - 1) / 10.0 - 1e-9

        calls.clear()
        second = await tier.delete_matching(scope)  # resumes after the 10th object
        listing = [params for name, params in calls.calls if name == "ListObjectsV2"]
        assert listing[0]["StartAfter"] == tier.object_key(sorted(entries)[9])
        third = await tier.delete_matching(scope)
        total = tuple(map(sum, zip(first, second, third, strict=True)))
        assert total == (len(expected), sum(len(entries[i].to_bytes()) for i in expected))
        assert {i async for i, _ in tier.scan()} == set(entries) - expected
    finally:
        await tier.aclose()


@pytest.mark.s3
async def test_s3_stats_without_an_index_list_at_most_every_max_age(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    tier = s3_tier(s3_server, s3_bucket, stats_max_age=3600)
    try:
        await tier.set(ident(1), corpus()[ident(1)])
        calls = count_s3_calls(await tier.store.client())
        assert (await tier.stats()).entries == 1
        for _ in range(5):
            await tier.stats()  # scrapes
        assert calls.operations() == ["ListObjectsV2"]
    finally:
        await tier.aclose()


@pytest.mark.s3
async def test_s3_objects_carry_their_lifecycle_class(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    tier = s3_tier(s3_server, s3_bucket, clock=lambda: NOW)
    try:
        lifetimes = {ident(1): NOW + 3 * 86400, ident(2): None, ident(3): NOW + 900 * 86400}
        for entry_id, expires in lifetimes.items():
            await tier.set(entry_id, make_entry(entry_id[:64], b"x", expires_at=expires))
        client = s3_server.client()

        def tags(entry_id: str) -> dict[str, str]:
            found = client.get_object_tagging(Bucket=s3_bucket, Key=tier.object_key(entry_id))
            return {tag["Key"]: tag["Value"] for tag in found["TagSet"]}

        assert tags(ident(1)) == {"voicecache-expiry-days": "7"}  # 3 days + grace → the 7 class
        assert tags(ident(2)) == {}  # pinned: never expired by a rule
        assert tags(ident(3)) == {}  # longer than a year: left to the sweeper

        # The README's rules, one per class, are a valid lifecycle configuration.
        rules = [
            {
                "ID": f"voicecache-{days}d",
                "Status": "Enabled",
                "Filter": {
                    "And": {
                        "Prefix": "cold/",
                        "Tags": [{"Key": LIFECYCLE_TAG, "Value": str(days)}],
                    }
                },
                "Expiration": {"Days": days},
            }
            for days in LIFECYCLE_DAYS
        ]
        client.put_bucket_lifecycle_configuration(
            Bucket=s3_bucket, LifecycleConfiguration={"Rules": rules}
        )
        stored = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
        assert [rule["Expiration"]["Days"] for rule in stored] == [1, 7, 30, 90, 365]
    finally:
        await tier.aclose()


FILTERS: list[dict[str, Any]] = [
    {"voice": "en"},
    {"tag": "event"},
    {"voice": "fr", "tag": "event"},
    {"model_version": "espeak-1"},
    {"engine": "espeak", "voice": "fr"},
    {"engine": "espeak"},
    {"expired": True},
    {"older_than": "1s"},
    {"older_than": "1s", "expired": True},
    {"all_entries": True},
]


@pytest.mark.redis
@pytest.mark.parametrize("conditions", FILTERS, ids=lambda c: ",".join(sorted(c)))
async def test_every_filter_is_answered_from_the_redis_index(
    redis_setup: tuple[RedisTier, list[str], Clock], conditions: dict[str, Any]
) -> None:
    tier, urls, clock = redis_setup
    clock.now = NOW + 305  # the n % 5 == 0 entries have expired (still within grace)
    entries = corpus()
    scope = PurgeFilter.create(now=clock.now, **conditions)
    expected = covered(scope, entries)
    assert expected
    before = scans(urls)
    removed = await tier.delete_matching(scope)
    assert removed == (len(expected), sum(len(entries[i].to_bytes()) for i in expected))
    assert scans(urls) == before
    assert {i async for i, _ in tier.scan()} == set(entries) - expected


@pytest.mark.s3
@pytest.mark.redis
@pytest.mark.parametrize("conditions", FILTERS, ids=lambda c: ",".join(sorted(c)))
async def test_every_filter_is_answered_from_the_s3_index(
    indexed_s3: tuple[S3Tier, Clock], conditions: dict[str, Any]
) -> None:
    tier, clock = indexed_s3
    clock.now = NOW + 305
    entries = corpus()
    scope = PurgeFilter.create(now=clock.now, **conditions)
    expected = covered(scope, entries)
    calls = count_s3_calls(await tier.store.client())
    removed = await tier.delete_matching(scope)
    assert removed == (len(expected), sum(len(entries[i].to_bytes()) for i in expected))
    assert set(calls.operations()) == {"DeleteObjects"}
    assert sorted(calls.keys("DeleteObjects")) == sorted(tier.object_key(i) for i in expected)
