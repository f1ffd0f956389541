"""One contract every cache tier honours. Each backend is a parameter of the `tier` fixture;
real servers back the shared tiers: their factories take the session's servers from the
fixtures of `tests/fixtures_servers.py` through `request.getfixturevalue`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.servers import MotoS3Server, RedisCluster
from voicecache.cache.tiers import DiskTier, Entry, EntryMeta, MemoryTier, Tier
from voicecache.cache.tiers.redis import RedisTier
from voicecache.cache.tiers.s3 import S3Tier
from voicecache.model import checksum

TierFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[Tier]]


async def _memory(request: pytest.FixtureRequest, root: Path) -> Tier:
    return MemoryTier(64 * 1024 * 1024, "lru")


async def _disk(request: pytest.FixtureRequest, root: Path) -> Tier:
    return DiskTier(root / "disk", 64 * 1024 * 1024)


async def _redis(request: pytest.FixtureRequest, root: Path) -> Tier:
    return RedisTier(request.getfixturevalue("redis_url"), timeout=2.0)


async def _redis_cluster(request: pytest.FixtureRequest, root: Path) -> Tier:
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flushall()
    return RedisTier(cluster.url, cluster=True, timeout=2.0)


async def _s3(request: pytest.FixtureRequest, root: Path) -> Tier:
    bucket: str = request.getfixturevalue("s3_bucket")
    server: MotoS3Server = request.getfixturevalue("s3_server")
    return S3Tier(
        bucket,
        prefix="contract",
        endpoint_url=server.endpoint_url,
        region=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )


TIER_FACTORIES: dict[str, TierFactory] = {
    "memory": _memory,
    "disk": _disk,
    "redis": _redis,
    "redis-cluster": _redis_cluster,
    "s3": _s3,
}
# Tiers backed by a real server carry its marker (`pytest -m "not redis"` skips them).
TIER_MARKS = {
    "redis": pytest.mark.redis,
    "redis-cluster": pytest.mark.redis,
    "s3": pytest.mark.s3,
}


def make_entry(key: str, data: bytes, *, expires_at: float | None = 2e9, **extra: object) -> Entry:
    meta = EntryMeta(
        key=key,
        format="flac",
        sample_rate=22050,
        duration=1.0,
        size=len(data),
        checksum=checksum(data),
        created=1e9,
        expires_at=expires_at,
        stale_until=None if expires_at is None else expires_at + 10,
        voice="en",
        tags=("a", "b"),
        text="hello",
        **extra,  # type: ignore[arg-type]
    )
    return Entry(data, meta)


@pytest.fixture(
    params=[
        pytest.param(name, marks=[TIER_MARKS[name]] if name in TIER_MARKS else [])
        for name in sorted(TIER_FACTORIES)
    ]
)
async def tier(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tier]:
    factory = TIER_FACTORIES[request.param]
    made = await factory(request, tmp_path)
    yield made
    await made.aclose()


async def test_get_missing_is_none(tier: Tier) -> None:
    assert await tier.get("0" * 64 + ".wav") is None


async def test_set_get_roundtrip_keeps_bytes_and_header(tier: Tier) -> None:
    entry = make_entry("ab" * 32, b"RIFF" + bytes(range(256)) * 10)
    await tier.set("ab" * 32 + ".flac", entry)
    got = await tier.get("ab" * 32 + ".flac")
    assert got is not None
    assert got.data == entry.data
    assert got.meta == entry.meta


async def test_overwrite_replaces(tier: Tier) -> None:
    entry_id = "cd" * 32 + ".flac"
    await tier.set(entry_id, make_entry("cd" * 32, b"first"))
    await tier.set(entry_id, make_entry("cd" * 32, b"second!"))
    got = await tier.get(entry_id)
    assert got is not None and got.data == b"second!"
    stats = await tier.stats()
    assert stats.entries == 1


async def test_delete_frees_and_reports(tier: Tier) -> None:
    entry_id = "ef" * 32 + ".flac"
    await tier.set(entry_id, make_entry("ef" * 32, b"x" * 1000))
    assert await tier.delete(entry_id) >= 1000
    assert await tier.get(entry_id) is None
    assert await tier.delete(entry_id) == 0


async def test_large_values(tier: Tier) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB, the largest clip we expect
    await tier.set("11" * 32 + ".wav", make_entry("11" * 32, data))
    got = await tier.get("11" * 32 + ".wav")
    assert got is not None and got.data == data


async def test_scan_lists_headers(tier: Tier) -> None:
    for index in range(3):
        key = f"{index:02d}" * 32
        await tier.set(key + ".flac", make_entry(key, b"audio%d" % index))
    found = {entry_id: meta async for entry_id, meta in tier.scan()}
    assert {f"{i:02d}" * 32 + ".flac" for i in range(3)} <= set(found)
    assert all(meta.voice == "en" for meta in found.values())


async def test_concurrent_writers_leave_one_whole_value(tier: Tier) -> None:
    entry_id = "77" * 32 + ".flac"
    payloads = [bytes([n]) * (5000 + n) for n in range(20)]
    await asyncio.gather(*(tier.set(entry_id, make_entry("77" * 32, p)) for p in payloads))
    got = await tier.get(entry_id)
    assert got is not None and got.data in payloads
    assert got.meta.size == len(got.data)


async def test_pinned_entries_roundtrip(tier: Tier) -> None:
    entry_id = "99" * 32 + ".flac"
    await tier.set(entry_id, make_entry("99" * 32, b"pinned", expires_at=None))
    got = await tier.get(entry_id)
    assert got is not None and got.meta.pinned and got.meta.stale_until is None
