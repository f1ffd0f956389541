"""Behaviour specific to the memory and disk tiers, and to the tiered composition."""

from __future__ import annotations

from pathlib import Path

from tests.cache.tiers.test_contract import make_entry
from voicecache.cache.tiers import DiskTier, MemoryTier, TieredCache


async def test_memory_tier_is_bounded_by_bytes() -> None:
    tier = MemoryTier(10_000, "lru")
    for index in range(20):
        await tier.set(f"k{index}", make_entry(f"k{index}", b"x" * 1000))
    stats = await tier.stats()
    assert stats.bytes <= 10_000
    assert stats.evictions >= 10
    assert await tier.get("k19") is not None
    assert await tier.get("k0") is None


async def test_disk_tier_persists_across_instances(tmp_path: Path) -> None:
    first = DiskTier(tmp_path, 1 << 20)
    await first.set("aa" * 32 + ".flac", make_entry("aa" * 32, b"persisted audio"))
    second = DiskTier(tmp_path, 1 << 20)
    got = await second.get("aa" * 32 + ".flac")
    assert got is not None and got.data == b"persisted audio"
    assert (await second.stats()).entries == 1


async def test_disk_tier_drops_corrupt_entries(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 1 << 20)
    entry_id = "bb" * 32 + ".flac"
    await tier.set(entry_id, make_entry("bb" * 32, b"good audio bytes"))
    path = await tier.locate(entry_id)
    assert path is not None
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert await tier.get(entry_id) is None
    assert not path.exists()
    assert (await tier.stats()).errors == 1


async def test_disk_tier_evicts_least_recently_used_but_not_pinned(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 12_000)
    await tier.set("pin", make_entry("pin", b"p" * 3000, expires_at=None))
    for index in range(6):
        await tier.set(f"e{index}", make_entry(f"e{index}", b"x" * 3000))
    stats = await tier.stats()
    assert stats.bytes <= 12_000
    assert await tier.get("pin") is not None
    assert await tier.get("e5") is not None
    assert await tier.get("e0") is None


async def test_disk_tier_rejects_path_traversal_ids(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "cache", 1 << 20)
    for bad in ("../../etc/passwd", ".hidden", "a/b"):
        try:
            await tier.set(bad, make_entry("x", b"data"))
        except Exception as exc:  # StorageError, counted by the tiered cache
            assert "invalid entry id" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    assert not (tmp_path / "etc").exists()


async def test_tiered_promotes_hits_and_hides_expired(tmp_path: Path) -> None:
    now = [1000.0]
    memory, disk = MemoryTier(1 << 20, "lru"), DiskTier(tmp_path, 1 << 20)
    cache = TieredCache([memory, disk], clock=lambda: now[0])
    await disk.set("k1", make_entry("k1", b"cold", expires_at=2000.0))
    found = await cache.get("k1")
    assert found is not None and found.tier == "disk" and found.fresh
    await cache.drain()
    assert memory.peek("k1") is not None
    now[0] = 2005.0  # expired, within grace (stale_until = 2010)
    found = await cache.get("k1")
    assert found is not None and not found.fresh
    assert cache.peek_memory("k1") is None
    now[0] = 2011.0  # past grace: gone
    assert await cache.get("k1") is None


async def test_disk_tier_sees_files_written_by_another_process(tmp_path: Path) -> None:
    server_side = DiskTier(tmp_path, 1 << 20)
    assert await server_side.get("cc" * 32 + ".flac") is None  # index built, empty
    warm_side = DiskTier(tmp_path, 1 << 20)  # e.g. `voicecache warm` in another process
    await warm_side.set("cc" * 32 + ".flac", make_entry("cc" * 32, b"warmed elsewhere"))
    got = await server_side.get("cc" * 32 + ".flac")
    assert got is not None and got.data == b"warmed elsewhere"
    assert (await server_side.stats()).entries == 1
    await warm_side.delete("cc" * 32 + ".flac")
    assert await server_side.get("cc" * 32 + ".flac") is None
    assert (await server_side.stats()).entries == 0
