"""The disk tier's index, budgets, migration and reconciliation, on real files in one process.

Several processes sharing a directory, and start-up under strace, are in
`test_disk_processes.py`."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from pathlib import Path

import pytest

from tests.cache.tiers.disk_helpers import (
    audit_opens,
    entry_for,
    real_bytes,
    value_files,
    write_legacy,
)
from tests.cache.tiers.test_contract import make_entry
from voicecache.cache.invalidation.purge import PurgeFilter, purge
from voicecache.cache.invalidation.sweeper import Sweeper, Unreachable
from voicecache.cache.tiers import DiskTier, Entry, EntryMeta, MemoryTier, TieredCache
from voicecache.cache.tiers.disk import DiskMaintenance, query
from voicecache.cache.tiers.disk.index import DB_NAME, DiskIndex
from voicecache.observability.metrics import Metrics, StateSnapshot

KIB = 1024
MANUAL = DiskMaintenance(background=False)  # tests run migration and reconciliation steps


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def disk(root: Path, max_bytes: int = 1 << 24, **options: object) -> DiskTier:
    options.setdefault("maintenance", MANUAL)
    return DiskTier(root, max_bytes, **options)  # type: ignore[arg-type]


async def test_index_lives_beside_the_files_and_counts_real_bytes(tmp_path: Path) -> None:
    tier = disk(tmp_path)
    for number in range(30):
        await tier.set(*entry_for(number, 1000 + number))
    stats = await tier.stats()
    assert (tmp_path / DB_NAME).is_file()
    assert stats.entries == 30 == len(value_files(tmp_path))
    assert stats.bytes == real_bytes(tmp_path)
    assert all(path.suffix == ".val" for path in value_files(tmp_path))
    await tier.aclose()


async def test_rewrites_leave_no_orphan_files(tmp_path: Path) -> None:
    tier = disk(tmp_path)
    eid, _ = entry_for(1, 10)
    payloads = [bytes([n]) * (3000 + n) for n in range(20)]
    await asyncio.gather(*(tier.set(eid, make_entry("k", p)) for p in payloads))
    got = await tier.get(eid)
    assert got is not None and got.data in payloads
    assert len(value_files(tmp_path)) == 1
    assert (await tier.stats()).bytes == real_bytes(tmp_path)
    await tier.aclose()


async def test_budget_is_shared_by_every_tier_object_on_the_directory(tmp_path: Path) -> None:
    budget = 60 * KIB
    one, two = disk(tmp_path, budget), disk(tmp_path, budget)
    for number in range(40):
        await (one if number % 2 else two).set(*entry_for(number, 4 * KIB))
    assert real_bytes(tmp_path) <= budget
    assert (await one.stats()).bytes == (await two.stats()).bytes == real_bytes(tmp_path)
    assert one.evictions + two.evictions == 40 - (await one.stats()).entries
    await one.aclose()
    await two.aclose()


async def test_hits_refresh_recency_in_batches(tmp_path: Path) -> None:
    clock = Clock()
    tier = disk(tmp_path, 3 * 5 * KIB, clock=clock)
    ids = []
    for number in range(3):
        clock.now += 10
        eid, entry = entry_for(number, 4 * KIB)
        ids.append(eid)
        await tier.set(eid, entry)
    clock.now += 10
    assert await tier.get(ids[0]) is not None  # the oldest is now the most recent
    clock.now += 10
    await tier.set(*entry_for(3, 4 * KIB))  # evicts one: the least recently used
    assert await tier.get(ids[1]) is None
    assert await tier.get(ids[0]) is not None
    assert await tier.get(ids[2]) is not None
    await tier.aclose()


async def test_fifo_policy_ignores_hits(tmp_path: Path) -> None:
    clock = Clock()
    tier = disk(tmp_path, 3 * 5 * KIB, clock=clock, policy="fifo")
    ids = []
    for number in range(3):
        clock.now += 10
        eid, entry = entry_for(number, 4 * KIB)
        ids.append(eid)
        await tier.set(eid, entry)
    clock.now += 10
    assert await tier.get(ids[0]) is not None
    await tier.set(*entry_for(3, 4 * KIB))
    assert await tier.get(ids[0]) is None  # first stored, first evicted, hit or not
    await tier.aclose()


async def test_entries_past_grace_are_evicted_before_live_ones(tmp_path: Path) -> None:
    clock = Clock(5_000.0)
    tier = disk(tmp_path, 3 * 5 * KIB, clock=clock)
    live_id, live = entry_for(1, 4 * KIB)
    dead_id, dead = entry_for(2, 4 * KIB, expires_at=100.0)  # stale_until 110: long gone
    await tier.set(live_id, live)
    clock.now += 10
    await tier.set(dead_id, dead)
    clock.now += 10
    await tier.set(*entry_for(3, 4 * KIB))
    await tier.set(*entry_for(4, 4 * KIB))
    assert await tier.get(dead_id) is None
    assert await tier.get(live_id) is not None
    await tier.aclose()


async def test_corrupt_or_truncated_files_are_never_served(tmp_path: Path) -> None:
    tier = disk(tmp_path)
    flipped, entry = entry_for(1, 5000)
    truncated, other = entry_for(2, 5000)
    await tier.set(flipped, entry)
    await tier.set(truncated, other)
    path = await tier.locate(flipped)
    assert path is not None
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    cut = await tier.locate(truncated)
    assert cut is not None
    cut.write_bytes(cut.read_bytes()[:-100])
    assert await tier.get(flipped) is None
    assert await tier.get(truncated) is None
    assert not path.exists() and not cut.exists()
    stats = await tier.stats()
    assert stats.errors == 2 and stats.entries == 0 and stats.bytes == 0
    await tier.aclose()


async def test_a_file_deleted_behind_the_index_is_a_miss_and_is_forgotten(tmp_path: Path) -> None:
    tier = disk(tmp_path)
    eid, entry = entry_for(7, 2000)
    await tier.set(eid, entry)
    path = await tier.locate(eid)
    assert path is not None
    path.unlink()
    assert await tier.get(eid) is None
    stats = await tier.stats()
    assert stats.entries == 0 and stats.extra["lost"] == 1
    await tier.aclose()


async def test_touch_rewrites_the_index_not_the_file(tmp_path: Path) -> None:
    tier = disk(tmp_path)
    eid, entry = entry_for(3, 2000, expires_at=2e9)
    await tier.set(eid, entry)
    before = await tier.locate(eid)
    assert before is not None
    mtime = before.stat().st_mtime_ns
    longer = entry.meta.with_expiry(3e9, grace=10)
    await tier.touch(eid, longer)
    assert await tier.locate(eid) == before and before.stat().st_mtime_ns == mtime
    got = await tier.get(eid)
    assert got is not None and got.meta.expires_at == 3e9 and got.data == entry.data
    assert [meta.expires_at async for _, meta in tier.scan()] == [3e9]
    await tier.aclose()


async def test_find_queries_the_index(tmp_path: Path) -> None:
    tier = disk(tmp_path)
    ids = {}
    for number, (voice, tags) in enumerate([("en", ("a",)), ("fr", ("a", "b")), ("en", ())]):
        eid, entry = entry_for(number, 100, voice=voice, tags=tags)
        ids[number] = eid
        await tier.set(eid, entry)
    with audit_opens(tmp_path) as opened:
        assert set(await tier.find(voice="en") or []) == {ids[0], ids[2]}
        assert set(await tier.find(tag="a") or []) == {ids[0], ids[1]}
        assert await tier.find(voice="fr", tag="b") == [ids[1]]
        assert await tier.find(tag="zzz") == []
    assert opened == []
    await tier.delete(ids[1])  # its tags go with it
    assert await tier.find(tag="b") == []
    await tier.aclose()


async def test_sweeps_and_purges_read_the_index_not_the_files(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    tier = disk(tmp_path)
    cache = TieredCache([tier], clock=lambda: now)
    for number in range(200):
        expires = now - 10 if number % 4 == 0 else now + 3600  # a quarter past grace
        eid, entry = entry_for(number, 500, expires_at=expires, voice=f"v{number % 5}")
        entry = Entry(entry.data, entry.meta.with_expiry(expires, grace=1))
        await tier.set(eid, entry)
    sweeper = Sweeper(cache, lambda: {}, interval=0, clock=lambda: now)
    with audit_opens(tmp_path) as opened:
        report = await sweeper.sweep()
        by_voice = await purge(cache, PurgeFilter.create(now=now, voice="v1"))
        stats = await tier.stats()
    assert report.tiers["disk"].entries == 50
    assert by_voice.tiers["disk"].entries == 30  # v1 among the 150 left: numbers ≡ 1 mod 5
    assert stats.entries == 120
    assert not [event for event in opened if not event[1].endswith(".val")]
    assert not [event for event in opened if event[0] == "open"]
    assert real_bytes(tmp_path) == stats.bytes
    await tier.aclose()


async def test_index_queries_select_exactly_what_the_scopes_match(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    rng = random.Random(7)
    tier = disk(tmp_path)
    corpus: dict[str, EntryMeta] = {}
    for number in range(150):
        created = now - rng.choice([60, 3600, 8 * 86400, 40 * 86400])
        ttl = rng.choice([None, 600.0, 86400.0, 90 * 86400.0])
        eid, entry = entry_for(
            number,
            50,
            expires_at=None if ttl is None else created + ttl,
            created=created,
            voice=rng.choice(["en", "fr", "cmn"]),
            engine=rng.choice(["espeak", "emotivoice"]),
            model_version=rng.choice(["v1", "v2"]),
            tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(3))),
        )
        meta = entry.meta.with_expiry(entry.meta.expires_at, grace=3600)
        corpus[eid] = meta
        await tier.set(eid, Entry(entry.data, meta))
    scopes: list[PurgeFilter | Unreachable] = [
        PurgeFilter.create(now=now, voice="fr"),
        PurgeFilter.create(now=now, tag="b"),
        PurgeFilter.create(now=now, voice="en", tag="a"),
        PurgeFilter.create(now=now, engine="emotivoice", model_version="v1"),
        PurgeFilter.create(now=now, older_than="7d"),
        PurgeFilter.create(now=now, expired=True),
        PurgeFilter.create(now=now, expired=True, voice="cmn", older_than="1h"),
        PurgeFilter.create(now=now, all_entries=True),
        Unreachable({}, now),
        Unreachable({"espeak": "v2", "emotivoice": "v1"}, now),
    ]
    for scope in scopes:
        condition = query.where(scope)
        assert condition is not None
        sql = f"SELECT id FROM entries WHERE {condition[0]}"
        found = {row[0] for row in tier.store.index.connection().execute(sql, condition[1])}
        expected = {eid for eid, meta in corpus.items() if scope.matches(eid, meta)}
        assert found == expected, scope
        assert expected, scope  # every scope here covers something
    await tier.aclose()


async def test_startup_opens_the_index_only(tmp_path: Path) -> None:
    first = disk(tmp_path)
    for number in range(300):
        await first.set(*entry_for(number, 200))
    await first.aclose()
    with audit_opens(tmp_path) as opened:
        restarted = disk(tmp_path)
        got = await restarted.get(entry_for(123, 200)[0])
        stats = await restarted.stats()
    assert got is not None and stats.entries == 300
    assert [event for event, _ in opened] == ["open"]  # the one entry file, nothing walked
    await restarted.aclose()


# -- pinned budgets ----------------------------------------------------------------------------


async def test_pinned_entries_have_their_own_budget_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = 300 * KIB
    tier = disk(tmp_path, budget, pinned_bytes=100 * KIB)
    with caplog.at_level(logging.WARNING):
        for number in range(40):  # 40 pinned entries of ~20 KiB: 800 KiB asked for
            await tier.set(*entry_for(number, 20 * KIB, expires_at=None))
    stats = await tier.stats()
    assert real_bytes(tmp_path) == stats.bytes <= budget
    assert stats.extra["pinned_bytes"] <= 100 * KIB
    assert stats.extra["pinned_entries"] == 4  # ~20.3 KiB each
    assert tier.pinned_rejected == stats.extra["pinned_rejected"] == 36
    assert stats.entries > 4  # the excess is stored, unpinned
    unpinned_kept = [
        eid for eid, meta in [item async for item in tier.scan()] if meta.pinned
    ]  # headers still say "no expiry"
    assert len(unpinned_kept) == stats.entries
    warned = [r for r in caplog.records if "pinned entries exceed their budget" in r.message]
    assert len(warned) == 1
    await tier.aclose()


async def test_default_pinned_budget_is_half_the_tier(tmp_path: Path) -> None:
    tier = disk(tmp_path, 100 * KIB)
    memory = MemoryTier(100 * KIB, "lru")
    assert tier.pinned_capacity == memory.pinned_capacity == 50 * KIB
    await tier.aclose()


def test_pinned_entries_have_their_own_budget_in_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tier = MemoryTier(300 * KIB, "lru", pinned_bytes=100 * KIB)
    with caplog.at_level(logging.WARNING):
        for number in range(40):
            tier.put(*entry_for(number, 20 * KIB, expires_at=None))
    stats = asyncio.run(tier.stats())
    assert stats.bytes <= 300 * KIB
    assert stats.extra["pinned_bytes"] == 100 * KIB  # five of 20 KiB
    assert tier.pinned_rejected == stats.extra["pinned_rejected"] == 35
    assert stats.evictions > 0 and stats.entries == 15
    warned = [r for r in caplog.records if "pinned entries exceed their budget" in r.message]
    assert len(warned) == 1
    for number in range(5):  # the pinned ones were never evicted
        assert tier.peek(entry_for(number, 1)[0]) is not None


async def test_pinned_rejections_are_a_metric(tmp_path: Path) -> None:
    tier = disk(tmp_path, 100 * KIB, pinned_bytes=10 * KIB)
    for number in range(3):
        await tier.set(*entry_for(number, 8 * KIB, expires_at=None))
    metrics = Metrics(price_per_million_chars=15.0)
    metrics.state = StateSnapshot(tiers=[await tier.stats()])
    text = metrics.exposition().decode()
    assert 'voicecache_pinned_rejected_total{tier="disk"} 2.0' in text
    await tier.aclose()


# -- migration of the pre-index layout ---------------------------------------------------------


async def test_migration_adopts_old_entries_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = {}
    for number in range(120):
        eid, entry = entry_for(number, 1000)
        old[eid] = entry
        write_legacy(tmp_path, eid, entry)
    corrupt = write_legacy(tmp_path, *entry_for(500, 1000))
    corrupt.write_bytes(corrupt.read_bytes()[:-5])
    tier = disk(tmp_path)
    first = next(iter(old))
    got = await tier.get(first)  # before the migration: found at its legacy path
    assert got is not None and got.data == old[first].data
    assert not (await tier.stats()).extra["migrated"]
    with caplog.at_level(logging.INFO, logger="voicecache.cache.tiers.disk.maintenance"):
        await tier.migrate()
    stats = await tier.stats()
    assert stats.extra["migrated"] and stats.entries == 120
    assert not corrupt.exists()
    assert stats.bytes == real_bytes(tmp_path)
    assert any("migration done: 119 entries adopted" in r.message for r in caplog.records)
    for eid, entry in old.items():
        found = await tier.get(eid)
        assert found is not None and found.data == entry.data and found.meta == entry.meta
    await tier.aclose()

    with audit_opens(tmp_path) as opened:  # the marker: a restart walks nothing
        again = disk(tmp_path, maintenance=DiskMaintenance(tick=0.01, reconcile_delay=60))
        assert (await again.stats()).extra["migrated"]
        await asyncio.sleep(0.1)
    assert opened == []
    await again.aclose()


async def test_purges_during_the_migration_reach_old_entries(tmp_path: Path) -> None:
    for number in range(20):
        write_legacy(tmp_path, *entry_for(number, 500, voice="fr" if number % 2 else "en"))
    tier = disk(tmp_path)
    report = await purge(TieredCache([tier]), PurgeFilter.create(now=1e9, voice="fr"))
    assert report.tiers["disk"].entries == 10  # the purge finished the migration first
    assert (await tier.stats()).entries == 10
    await tier.aclose()

    other = tmp_path / "other"
    eid, entry = entry_for(1, 500)
    write_legacy(other, eid, entry)
    tier = disk(other)
    assert await tier.delete(eid) > 0  # not adopted yet: its old file goes too
    await tier.migrate()
    assert await tier.get(eid) is None and (await tier.stats()).entries == 0
    await tier.aclose()


async def test_migration_runs_in_the_background_and_respects_the_budget(
    tmp_path: Path,
) -> None:
    budget = 200 * KIB
    for number in range(60):  # 600 KiB of old entries, pinned ones among them
        eid, entry = entry_for(number, 10 * KIB, expires_at=None if number % 3 == 0 else 2e9)
        write_legacy(tmp_path, eid, entry)
    tier = DiskTier(tmp_path, budget, maintenance=DiskMaintenance(tick=0.01, pause=0))
    deadline = time.monotonic() + 30
    while not (await tier.stats()).extra["migrated"]:
        assert time.monotonic() < deadline, "the background migration did not finish"
        await asyncio.sleep(0.05)
    stats = await tier.stats()
    assert stats.bytes == real_bytes(tmp_path) <= budget
    assert stats.extra["pinned_bytes"] <= budget // 2
    await tier.aclose()


# -- reconciliation ----------------------------------------------------------------------------


async def test_reconciliation_drops_rows_without_files_and_removes_strays(
    tmp_path: Path,
) -> None:
    tier = disk(tmp_path, maintenance=DiskMaintenance(background=False, stray_grace=60))
    ids = []
    for number in range(50):
        eid, entry = entry_for(number, 1000)
        ids.append(eid)
        await tier.set(eid, entry)
    for eid in ids[:10]:  # deleted behind the index's back
        path = await tier.locate(eid)
        assert path is not None
        path.unlink()
    old = time.time() - 3600
    stray = tmp_path / "ab" / "cd" / ("0" * 28 + ".val")  # an interrupted write
    temp = tmp_path / "ab" / "cd" / ".tmp-crashed"
    young = tmp_path / "ab" / "ce" / ("1" * 28 + ".val")  # maybe a write in flight
    for path in (stray, temp, young):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    os.utime(stray, (old, old))
    os.utime(temp, (old, old))
    legacy_id, legacy = entry_for(99, 1000)  # an old-layout file appearing late
    os.utime(write_legacy(tmp_path, legacy_id, legacy), (old, old))

    await tier.reconcile()

    stats = await tier.stats()
    assert stats.entries == 41  # 40 left + the legacy file adopted
    assert not stray.exists() and not temp.exists() and young.exists()
    assert stats.extra["lost"] == 10 and stats.extra["strays_removed"] == 2
    assert stats.bytes == real_bytes(tmp_path) - young.stat().st_size
    got = await tier.get(legacy_id)
    assert got is not None and got.data == legacy.data
    await tier.aclose()


def test_background_work_is_leased_to_one_process_at_a_time(tmp_path: Path) -> None:
    index = DiskIndex(tmp_path)
    index.create()
    assert index.take_lease("maintainer", "a", now=100.0, hold=30.0)
    assert index.take_lease("maintainer", "a", now=110.0, hold=30.0)  # renewed
    assert not index.take_lease("maintainer", "b", now=120.0, hold=30.0)
    assert index.take_lease("maintainer", "b", now=141.0, hold=30.0)  # a's lapsed
    index.release_lease("maintainer", "b")
    assert index.take_lease("maintainer", "a", now=142.0, hold=30.0)  # released at once
    index.close()
