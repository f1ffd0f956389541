"""One contract every cache tier honours. Each backend is a parameter of the `tier` fixture;
real servers back the shared tiers: their factories take the session's servers from the
fixtures of `tests/fixtures_servers.py` through `request.getfixturevalue`.

The tests use the `Tier` interface only, so they hold for any implementation of a backend.
The one thing they do behind a tier's back, damaging stored bytes, goes through the real
backend (files, Redis keys, S3 objects) and finds the stored copy by its audio bytes, not by
knowing the backend's layout."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import MotoS3Server, RedisCluster
from voicecache.cache.tiers import DiskTier, Entry, EntryMeta, MemoryTier, Tier
from voicecache.cache.tiers.redis import RedisTier
from voicecache.cache.tiers.s3 import S3Tier
from voicecache.cluster.redis import RedisHandle
from voicecache.model import checksum

# Flips one byte inside every stored copy of `payload`; returns how many copies it found.
Damage = Callable[[bytes], int]


@dataclass
class Backend:
    """A tier, and how to reach the storage behind it."""

    tier: Tier
    # None: the tier keeps Python objects in this process; there are no bytes to damage.
    damage: Damage | None


BackendFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[Backend]]


def _flip(blob: bytes, payload: bytes) -> tuple[int, bytes] | None:
    """(offset, replacement byte) that damages the middle of `payload` inside `blob`."""
    at = blob.find(payload)
    if at < 0:
        return None
    middle = at + len(payload) // 2
    return middle, bytes([blob[middle] ^ 0xFF])


def _damage_files(root: Path) -> Damage:
    def damage(payload: bytes) -> int:
        found = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            flip = _flip(path.read_bytes(), payload)
            if flip is not None:
                with path.open("r+b") as handle:  # in place, as bit rot would
                    handle.seek(flip[0])
                    handle.write(flip[1])
                found += 1
        return found

    return damage


def _damage_redis(urls: list[str]) -> Damage:
    """Damage through each node (for a cluster: every master holds its own keys)."""

    def damage(payload: bytes) -> int:
        found = 0
        for url in urls:
            with redis.Redis.from_url(url) as client:
                for key in client.scan_iter(count=1000):
                    if client.type(key) != b"string":
                        continue
                    flip = _flip(client.get(key) or b"", payload)
                    if flip is not None:
                        client.setrange(key, *flip)
                        found += 1
        return found

    return damage


def _damage_s3(server: MotoS3Server, bucket: str) -> Damage:
    def damage(payload: bytes) -> int:
        client = server.client()
        found = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                got = client.get_object(Bucket=bucket, Key=item["Key"])
                blob = got["Body"].read()
                flip = _flip(blob, payload)
                if flip is None:
                    continue
                offset, byte = flip
                client.put_object(  # the same object, metadata kept, one byte changed
                    Bucket=bucket,
                    Key=item["Key"],
                    Body=blob[:offset] + byte + blob[offset + 1 :],
                    ContentType=got["ContentType"],
                    Metadata=got["Metadata"],
                )
                found += 1
        return found

    return damage


async def _memory(request: pytest.FixtureRequest, root: Path) -> Backend:
    return Backend(MemoryTier(64 * 1024 * 1024, "lru"), damage=None)


async def _disk(request: pytest.FixtureRequest, root: Path) -> Backend:
    return Backend(DiskTier(root / "disk", 64 * 1024 * 1024), _damage_files(root / "disk"))


async def _redis(request: pytest.FixtureRequest, root: Path) -> Backend:
    url: str = request.getfixturevalue("redis_url")
    tier = RedisTier(RedisHandle.from_url(url, timeout=2.0))
    await tier.adopt()  # an empty Redis: the index is complete at once
    return Backend(tier, _damage_redis([url]))


async def _redis_cluster(request: pytest.FixtureRequest, root: Path) -> Backend:
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flushall()
    tier = RedisTier(RedisHandle.from_url(cluster.url, cluster=True, timeout=2.0))
    await tier.adopt()
    return Backend(tier, _damage_redis(cluster.urls))


def _s3_tier(request: pytest.FixtureRequest, **options: Any) -> tuple[S3Tier, Damage]:
    bucket: str = request.getfixturevalue("s3_bucket")
    server: MotoS3Server = request.getfixturevalue("s3_server")
    tier = S3Tier(
        bucket,
        prefix="contract",
        endpoint_url=server.endpoint_url,
        region=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        **options,
    )
    return tier, _damage_s3(server, bucket)


async def _s3(request: pytest.FixtureRequest, root: Path) -> Backend:
    # No index: stats come from a listing, here re-made on every call (the default keeps
    # one for 5 minutes) so that counts are checked exactly.
    return Backend(*_s3_tier(request, stats_max_age=0.0))


async def _s3_indexed(request: pytest.FixtureRequest, root: Path) -> Backend:
    """S3 with its index in Redis (the recommended set-up for large buckets)."""
    url: str = request.getfixturevalue("redis_url")
    tier, damage = _s3_tier(request, redis=RedisHandle.from_url(url, timeout=2.0))
    await tier.adopt()  # an empty bucket: the index is complete at once
    return Backend(tier, damage)


BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "memory": _memory,
    "disk": _disk,
    "redis": _redis,
    "redis-cluster": _redis_cluster,
    "s3": _s3,
    "s3-indexed": _s3_indexed,
}
# Tiers backed by a real server carry its marker (`pytest -m "not redis"` skips them).
TIER_MARKS = {
    "redis": [pytest.mark.redis],
    "redis-cluster": [pytest.mark.redis],
    "s3": [pytest.mark.s3],
    "s3-indexed": [pytest.mark.s3, pytest.mark.redis],
}
# Tiers that keep bytes somewhere a test can damage them.
STORING_BYTES = ("disk", "redis", "redis-cluster", "s3", "s3-indexed")


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
        **{"voice": "en", "tags": ("a", "b"), "text": "hello", **extra},  # type: ignore[arg-type]
    )
    return Entry(data, meta)


def audio(seed: int, size: int = 20_000) -> bytes:
    """Bytes that occur nowhere else in a backend (so a stored copy can be found by them)."""
    return random.Random(seed).randbytes(size)


def _params(names: Any) -> list[Any]:
    return [pytest.param(name, marks=TIER_MARKS.get(name, [])) for name in sorted(names)]


@pytest.fixture(params=_params(BACKEND_FACTORIES))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = await BACKEND_FACTORIES[request.param](request, tmp_path)
    yield made
    await made.tier.aclose()


@pytest.fixture
def tier(backend: Backend) -> Tier:
    return backend.tier


@pytest.fixture(params=_params(STORING_BYTES))
async def storing_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = await BACKEND_FACTORIES[request.param](request, tmp_path)
    assert made.damage is not None
    yield made
    await made.tier.aclose()


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


# -- touch: a new header for a stored entry ----------------------------------------------------


async def test_touch_replaces_the_header_and_keeps_the_audio(tier: Tier) -> None:
    entry_id = "3c" * 32 + ".flac"
    entry = make_entry("3c" * 32, audio(1))
    await tier.set(entry_id, entry)
    # Sliding expiry: a later expiry (and grace), as `Policy.hit` makes it.
    later = replace(entry.meta, sliding=True, ttl=600.0).with_expiry(2e9 + 600, grace=10)
    await tier.touch(entry_id, later)
    got = await tier.get(entry_id)
    assert got is not None and got.data == entry.data
    assert got.meta == later
    assert {i: m async for i, m in tier.scan()}[entry_id] == later
    # Pinned: no expiry at all.
    await tier.touch(entry_id, later.with_expiry(None, grace=10))
    got = await tier.get(entry_id)
    assert got is not None and got.meta.pinned and got.meta.stale_until is None
    assert got.data == entry.data
    assert (await tier.stats()).entries == 1


async def test_touch_of_a_missing_entry_stores_nothing(tier: Tier) -> None:
    entry_id = "3d" * 32 + ".flac"
    await tier.touch(entry_id, make_entry("3d" * 32, audio(2)).meta)
    assert await tier.get(entry_id) is None
    assert (await tier.stats()).entries == 0
    assert [i async for i, _ in tier.scan()] == []


# -- find: voice and tag lookups ---------------------------------------------------------------


async def test_find_by_voice_and_tag_or_says_it_has_no_index(tier: Tier) -> None:
    made = {
        "en-ab": make_entry("e1" * 32, audio(3), voice="en", tags=("a", "b")),
        "fr-bc": make_entry("e2" * 32, audio(4), voice="fr", tags=("b", "c")),
        "en-c": make_entry("e3" * 32, audio(5), voice="en", tags=("c",)),
    }
    ids = {name: entry.meta.key + ".flac" for name, entry in made.items()}
    for name, entry in made.items():
        await tier.set(ids[name], entry)

    queries: dict[tuple[str | None, str | None], set[str]] = {
        ("en", None): {"en-ab", "en-c"},
        ("fr", None): {"fr-bc"},
        (None, "b"): {"en-ab", "fr-bc"},
        (None, "c"): {"fr-bc", "en-c"},
        ("en", "c"): {"en-c"},  # both: entries with both
        ("fr", "a"): set(),
        ("de", None): set(),
    }
    first = await tier.find(voice="en")
    if first is None:
        # Not indexed here (the caller scans instead): then no query is answered.
        for voice, tag in queries:
            assert await tier.find(voice=voice, tag=tag) is None, (voice, tag)
        return
    for (voice, tag), expected in queries.items():
        found = await tier.find(voice=voice, tag=tag)
        assert found is not None and sorted(found) == sorted(ids[n] for n in expected), (
            voice,
            tag,
        )
    assert await tier.find() is None  # no criterion: nothing to look up
    await tier.delete(ids["en-c"])
    assert await tier.find(voice="en") == [ids["en-ab"]]
    assert sorted(await tier.find(tag="c") or []) == [ids["fr-bc"]]


# -- stats: entries and bytes ------------------------------------------------------------------


async def test_stats_count_entries_and_bytes(backend: Backend) -> None:
    tier = backend.tier
    entry_id = "5a" * 32 + ".flac"
    entry = make_entry("5a" * 32, audio(6, 100_000))
    stored = len(entry.to_bytes())  # the audio and its header
    before = await tier.stats()
    await tier.set(entry_id, entry)
    after_set = await tier.stats()
    freed = await tier.delete(entry_id)
    after_delete = await tier.stats()

    assert after_set.entries == before.entries + 1
    assert after_delete.entries == before.entries
    # What the tier keeps of an entry: at least the audio, at most the serialized entry.
    assert len(entry.data) <= freed <= stored
    went_up, went_down = after_set.bytes - before.bytes, after_set.bytes - after_delete.bytes
    assert went_up == went_down == freed
    assert after_delete.bytes == before.bytes


# -- corrupt entries ---------------------------------------------------------------------------


async def test_damaged_entry_is_never_served(storing_backend: Backend) -> None:
    tier, damage = storing_backend.tier, storing_backend.damage
    assert damage is not None
    entry_id, neighbour_id = "c0" * 32 + ".flac", "c1" * 32 + ".flac"
    entry = make_entry("c0" * 32, audio(7))
    neighbour = make_entry("c1" * 32, audio(8))
    await tier.set(entry_id, entry)
    await tier.set(neighbour_id, neighbour)
    assert await tier.get(entry_id) is not None  # read once while intact

    assert damage(entry.data) >= 1  # every stored copy of the audio, damaged in place
    assert await tier.get(entry_id) is None
    assert await tier.get(entry_id) is None  # still a miss: never served later either
    # The tier dropped it; the neighbour is untouched.
    assert entry_id not in {i async for i, _ in tier.scan()}
    got = await tier.get(neighbour_id)
    assert got is not None and got.data == neighbour.data
    # A fresh write of the same id is served again.
    await tier.set(entry_id, entry)
    again = await tier.get(entry_id)
    assert again is not None and again.data == entry.data
