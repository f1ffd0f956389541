"""Purges and the sweeper: filters, counts per tier, the admin API, the CLI, and purges racing
live traffic (promotions, coalesced fills, touches)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.cache.test_policy import Clock
from tests.cli.test_cli import run_cli
from tests.conftest import LiveApp
from voicecache.bootstrap import build
from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import purge
from voicecache.cache.invalidation.sweeper import Sweeper, SweepLease
from voicecache.cache.tiers import DiskTier, Entry, EntryMeta, MemoryTier, Tier, TieredCache
from voicecache.cli.main import app
from voicecache.errors import InvalidFilter, InvalidRequest
from voicecache.model import SpeechRequest, checksum
from voicecache.settings import Settings

NOW = 1_700_000_000.0


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def entry(name: str, size: int = 1000, **fields: Any) -> tuple[str, Entry]:
    """An entry whose id is derived from `name`; header fields overridable."""
    data = name.encode().ljust(size, b".")
    created = fields.pop("created", NOW - 3600)
    ttl = fields.pop("ttl", 86400.0)
    expires_at = None if ttl is None else created + ttl
    meta = EntryMeta(
        key=digest(name),
        format="flac",
        sample_rate=22050,
        duration=1.0,
        size=len(data),
        checksum=checksum(data),
        created=created,
        expires_at=expires_at,
        stale_until=None if expires_at is None else expires_at + 86400,
        ttl=ttl,
        engine=fields.pop("engine", "espeak"),
        model_version=fields.pop("model_version", "espeak-ng-1.52"),
        voice=fields.pop("voice", "en"),
        tags=tuple(fields.pop("tags", ())),
        text=name,
        **fields,
    )
    return f"{meta.key}.flac", Entry(data, meta)


CORPUS = {
    "en-event": {"voice": "en", "tags": ["event"]},
    "en-plain": {"voice": "en"},
    "fr-event": {"voice": "fr", "tags": ["event", "story"]},
    "fr-old": {"voice": "fr", "created": NOW - 30 * 86400, "ttl": 90 * 86400.0},
    "cmn-expired": {"voice": "cmn", "created": NOW - 7200, "ttl": 3600.0},
    "cmn-pinned": {"voice": "cmn", "ttl": None, "created": NOW - 90 * 86400},
    "emo-happy": {"voice": "8051", "engine": "emotivoice", "model_version": "emotivoice-1"},
    "emo-old-model": {"voice": "8051", "engine": "emotivoice", "model_version": "emotivoice-0"},
}


async def filled(tmp_path: Path) -> TieredCache:
    cache = TieredCache(
        [MemoryTier(1 << 24, "lru"), DiskTier(tmp_path / "disk", 1 << 24)], clock=lambda: NOW
    )
    for name, fields in CORPUS.items():
        entry_id, value = entry(name, **fields)
        await cache.set(entry_id, value)
    return cache


async def remaining(tier: Tier) -> set[str]:
    return {meta.text async for _, meta in tier.scan()}


@pytest.mark.parametrize(
    ("conditions", "removed"),
    [
        ({"voice": "en"}, {"en-event", "en-plain"}),
        ({"tag": "event"}, {"en-event", "fr-event"}),
        ({"voice": "fr", "tag": "event"}, {"fr-event"}),
        ({"key": digest("fr-old")}, {"fr-old"}),
        ({"key": digest("fr-old") + ".flac"}, {"fr-old"}),
        ({"engine": "emotivoice"}, {"emo-happy", "emo-old-model"}),
        ({"model_version": "emotivoice-0"}, {"emo-old-model"}),
        ({"older_than": "7d"}, {"fr-old", "cmn-pinned"}),
        ({"older_than": "7d", "voice": "fr"}, {"fr-old"}),
        ({"expired": True}, {"cmn-expired"}),  # pinned entries never expire
        ({"all_entries": True}, set(CORPUS)),
    ],
)
async def test_purge_removes_exactly_the_matching_entries_in_every_tier(
    tmp_path: Path, conditions: dict[str, Any], removed: set[str]
) -> None:
    cache = await filled(tmp_path)
    report = await purge(cache, PurgeFilter.create(now=NOW, **conditions))
    for tier in cache.tiers:
        assert await remaining(tier) == set(CORPUS) - removed, tier.name
        assert report.tiers[tier.name].entries == len(removed)
    assert report.tiers["memory"].bytes == 1000 * len(removed)
    assert report.tiers["disk"].bytes > 1000 * len(removed)  # files hold a header too
    assert report.entries == 2 * len(removed)
    assert report.to_json()["tiers"]["memory"] == {
        "entries": len(removed),
        "bytes": 1000 * len(removed),
    }
    again = await purge(cache, PurgeFilter.create(now=NOW, **conditions))
    assert again.entries == 0 and again.bytes == 0
    await cache.aclose()


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({}, "at least one filter"),
        ({"voice": "  "}, "at least one filter"),
        ({"expired": False}, "at least one filter"),
        ({"all_entries": True, "voice": "en"}, "cannot be combined"),
        ({"key": "abc"}, "64-character"),
        ({"key": digest("x") + ".exe"}, "64-character"),
        ({"older_than": "soon"}, "older_than"),
        ({"voice": "../etc"}, "voice"),
        ({"tag": "a b"}, "tag"),
    ],
)
def test_bad_filters_are_refused(conditions: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilter, match=message) as caught:
        PurgeFilter.create(now=NOW, **conditions)
    assert isinstance(caught.value, InvalidRequest) and caught.value.status_code == 400


class IndexedMemoryTier(MemoryTier):
    """A memory tier with the optional secondary index (as Redis keeps) and no scan."""

    name = "indexed"

    def __init__(self) -> None:
        super().__init__(1 << 24, "lru")
        self.finds: list[dict[str, str]] = []

    async def find(self, *, voice: str | None = None, tag: str | None = None) -> list[str] | None:
        self.finds.append({k: v for k, v in {"voice": voice, "tag": tag}.items() if v})
        return [
            entry_id
            for entry_id, e in self._entries.items()
            if (voice is None or e.meta.voice == voice) and (tag is None or tag in e.meta.tags)
        ]

    async def scan(self):  # type: ignore[no-untyped-def,override]
        raise AssertionError("an indexed purge must not scan")
        yield  # pragma: no cover


async def test_purge_by_voice_or_tag_uses_the_tier_index_instead_of_a_scan() -> None:
    tier = IndexedMemoryTier()
    cache = TieredCache([tier])
    for name, fields in CORPUS.items():
        await cache.set(*entry(name, **fields))
    report = await purge(cache, PurgeFilter.create(now=NOW, voice="fr", tag="event"))
    assert report.tiers["indexed"].entries == 1 and not report.errors
    assert tier.finds == [{"voice": "fr", "tag": "event"}]
    assert tier.header(entry("fr-event")[0]) is None
    # A condition the index cannot answer falls back to a scan (which this tier refuses).
    broken = await purge(cache, PurgeFilter.create(now=NOW, voice="fr", older_than="1d"))
    assert "must not scan" in broken.errors["indexed"]


# -- the sweeper ---------------------------------------------------------------------------------


async def test_sweeper_removes_old_model_versions_and_entries_past_grace(tmp_path: Path) -> None:
    cache = await filled(tmp_path)
    clock = Clock(NOW)
    versions = {"espeak": "espeak-ng-1.52", "emotivoice": "emotivoice-1"}
    sweeper = Sweeper(cache, lambda: versions, 300, clock)
    report = await sweeper.sweep()
    assert report.entries == 2  # emo-old-model, in both tiers
    for tier in cache.tiers:
        assert await remaining(tier) == set(CORPUS) - {"emo-old-model"}
    clock.advance(86400 + 1)  # cmn-expired is now past its grace period
    versions["espeak"] = "espeak-ng-1.53"  # and a bumped model makes espeak audio unreachable
    await sweeper.sweep()
    for tier in cache.tiers:
        assert await remaining(tier) == {"emo-happy"}
    await cache.aclose()


async def test_sweeper_runs_in_the_background_and_stops(tmp_path: Path) -> None:
    cache = await filled(tmp_path)
    sweeper = Sweeper(cache, lambda: {"emotivoice": "emotivoice-1"}, 0.01, lambda: NOW).start()
    for _ in range(1000):
        if sweeper.sweeps >= 2:
            break
        await asyncio.sleep(0.005)
    await sweeper.stop()
    assert "emo-old-model" not in await remaining(cache.tiers[1])
    assert Sweeper(cache, dict, 0, lambda: NOW).start()._task is None  # interval 0: off
    await cache.aclose()


# -- admin API and CLI ---------------------------------------------------------------------------


def test_admin_purge_over_http(serve: Callable[..., LiveApp], settings: Settings) -> None:
    live = serve(settings)
    lines = {
        "en-event": {"text": "The event starts now", "voice": "en", "tags": ["event"]},
        "en": {"text": "Good morning", "voice": "en"},
        "fr": {"text": "Bonjour", "voice": "fr", "tags": ["event"]},
        "fr2": {"text": "Bonsoir", "voice": "fr"},
    }
    keys = {
        name: live.client.post("/tts", json=body).headers["x-cache-key"]
        for name, body in lines.items()
    }

    refused = live.client.delete("/admin/cache")
    assert refused.status_code == 400 and "filter" in refused.json()["detail"]
    assert live.client.delete("/admin/cache", params={"older_than": "x"}).status_code == 400
    assert live.client.delete("/admin/cache", params={"expired": "maybe"}).status_code == 422

    by_tag = live.client.delete("/admin/cache", params={"tag": "event"})
    assert by_tag.status_code == 200, by_tag.text
    body = by_tag.json()
    # Each line is stored as canonical FLAC plus the WAV variant asked for: 2 entries a line.
    assert body["tiers"]["memory"]["entries"] == 4 and body["tiers"]["disk"]["entries"] == 4
    assert body["tiers"]["memory"]["bytes"] > 0 and body["entries"] == 8
    assert body["filter"] == {"tag": "event"} and body["errors"] == {}
    statuses = {
        name: live.client.post("/tts", json=lines[name]).headers["x-cache"] for name in lines
    }
    assert statuses == {"en-event": "MISS", "en": "HIT", "fr": "MISS", "fr2": "HIT"}

    by_key = live.client.delete("/admin/cache", params={"key": keys["en"]})
    assert by_key.json()["entries"] == 4
    by_voice = live.client.delete("/admin/cache", params={"voice": "fr"})
    assert by_voice.json()["tiers"]["disk"]["entries"] == 4
    assert live.client.post("/tts", json=lines["fr2"]).headers["x-cache"] == "MISS"
    everything = live.client.delete("/admin/cache", params={"all": "true"})
    assert everything.json()["tiers"]["disk"]["entries"] == 4  # en-event and fr2, refilled
    assert not list(settings.cache_dir.rglob("*.val"))  # no entry file left


def test_purge_cli_reports_entries_and_bytes_per_tier(tmp_path: Path) -> None:
    data = tmp_path / "d"

    async def fill() -> None:
        gateway = build(Settings(data_dir=data)).gateway
        for text, voice in [("One", "en"), ("Two", "en"), ("Trois", "fr")]:
            await gateway.speak(SpeechRequest.create(text=text, voice=voice))
        await gateway.aclose()

    asyncio.run(fill())
    runner = CliRunner()
    env = {"VOICECACHE_DATA_DIR": str(data)}
    refused = runner.invoke(app, ["purge"], env=env)
    assert refused.exit_code == 2
    assert refused.stderr.strip().startswith("error: give at least one filter")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert runner.invoke(app, ["purge", "--older-than", "soon"], env=env).exit_code == 2

    done = run_cli("purge", "--voice", "en", data_dir=data)  # as a user runs it
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert set(rows) == {"memory", "disk", "total"}
    assert rows["disk"][0] == "4"  # 2 lines × (flac + wav)
    assert int(rows["disk"][1].replace(",", "")) > 1000
    assert rows["memory"] == ["0", "0"]  # a fresh process has nothing in memory

    expired = runner.invoke(app, ["purge", "--expired"], env=env)
    assert expired.exit_code == 0 and table_rows(expired.stdout)["total"][0] == "0"
    left = runner.invoke(app, ["purge", "--all"], env=env)
    assert left.exit_code == 0
    assert table_rows(left.stdout)["disk"][0] == "2"
    assert not list(data.rglob("*.val"))  # no entry file left


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of rich's table: {tier: [entries, bytes]}."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 3:
            rows[cells[0]] = cells[1:]
    return rows


# -- purges racing live traffic ------------------------------------------------------------------


def speech(text: str, voice: str) -> SpeechRequest:
    return SpeechRequest.create(text=text, voice=voice, format="flac")


async def test_purge_racing_requests_loses_nothing_else_and_revives_nothing(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"popularity_hits": 2, "default_ttl": 3600.0})
    purged = [speech(f"Purged line {i}", "en") for i in range(12)]
    kept = [speech(f"Kept line {i}", "fr") for i in range(12)]
    warm = build(settings).gateway
    for request in purged + kept:
        await warm.speak(request)
    await warm.aclose()

    # A fresh process: everything is on disk only, so hits promote into memory while the
    # purge runs, and hits count towards popularity touches.
    gateway = build(settings).gateway
    cache = gateway.cache
    traffic = [gateway.speak(request) for request in (purged + kept) * 3]
    traffic += [gateway.speak(speech(f"New line {i}", "fr")) for i in range(4)]
    middle = len(traffic) // 3
    tasks = [asyncio.ensure_future(work) for work in traffic[:middle]]
    purge_task = asyncio.ensure_future(purge(cache, PurgeFilter.create(now=0, voice="en")))
    tasks += [asyncio.ensure_future(work) for work in traffic[middle:]]
    results = await asyncio.gather(*tasks)
    report = await purge_task
    await cache.drain()
    assert all(result.status in {"HIT", "MISS", "COALESCED"} for result in results)
    assert report.entries > 0

    for tier in cache.tiers:
        voices = [meta.voice async for _, meta in tier.scan()]
        assert "en" not in voices, f"purged audio came back in {tier.name}"
        if tier.name == "disk":
            assert voices.count("fr") == len(kept) + 4, "the purge removed other entries"
    engine = gateway.engines["espeak"]
    calls = engine.calls
    for request in kept:
        assert (await gateway.speak(request)).status == "HIT"
    for request in purged:
        assert (await gateway.speak(request)).status == "MISS"
    assert engine.calls == calls + len(purged)
    await gateway.aclose()


async def test_requests_after_a_purge_never_join_work_begun_before_it(settings: Settings) -> None:
    gateway = build(settings).gateway
    long_text = " ".join(["The quick brown fox jumps over the lazy dog."] * 20)
    request = speech(long_text, "en")
    first = asyncio.ensure_future(gateway.speak(request))
    for _ in range(1000):
        if len(gateway._coalescer):  # the first request is synthesizing
            break
        await asyncio.sleep(0)
    await purge(gateway.cache, PurgeFilter.create(now=0, voice="en"))
    second = await gateway.speak(request)
    assert second.status == "MISS"  # its own work, not COALESCED with the pre-purge fill
    assert (await first).status == "MISS"
    await gateway.cache.drain()
    assert gateway.engines["espeak"].calls == 2
    # Only the post-purge fill was stored; the pre-purge one was fenced off.
    assert (await gateway.speak(request)).status == "HIT"
    await gateway.aclose()


async def test_a_promotion_racing_a_purge_does_not_revive_the_entry(tmp_path: Path) -> None:
    disk = DiskTier(tmp_path / "disk", 1 << 24)
    memory = MemoryTier(1 << 24, "lru")
    entry_id, value = entry("en-event", voice="en")
    await disk.set(entry_id, value)
    cache = TieredCache([memory, disk], clock=lambda: NOW)
    found = await cache.get(entry_id)  # found on disk; its promotion is now in flight
    assert found is not None and found.tier == "disk"
    report = await purge(cache, PurgeFilter.create(now=NOW, voice="en"))
    await cache.drain()
    assert report.tiers["disk"].entries == 1
    assert memory.header(entry_id) is None and await cache.get(entry_id) is None

    # During a purge its entries are hidden at once, and writes of them are refused.
    await cache.set(*entry("fr", voice="fr"))
    record = cache.begin_purge(PurgeFilter.create(now=NOW, voice="fr"))
    assert await cache.get(entry("fr", voice="fr")[0]) is None
    assert cache.peek_memory(entry("fr", voice="fr")[0]) is None
    await cache.set(*entry("fr2", voice="fr"))
    await cache.set(*entry("en2", voice="en"))  # not covered: stored
    cache.end_purge(record)
    assert memory.header(entry("fr2", voice="fr")[0]) is None
    assert memory.header(entry("en2", voice="en")[0]) is not None
    await cache.aclose()


async def test_one_worker_per_interval_sweeps_a_shared_disk(tmp_path: Path) -> None:
    first, second = await filled(tmp_path), await filled(tmp_path)  # one directory, two workers
    versions = {"emotivoice": "emotivoice-1"}
    sweepers = [
        Sweeper(cache, lambda: versions, 300, lambda: NOW, SweepLease(tmp_path / "data"))
        for cache in (first, second)
    ]
    one = await sweepers[0].sweep()
    two = await sweepers[1].sweep()
    assert set(one.tiers) == {"memory", "disk"} and one.tiers["disk"].entries == 1
    assert set(two.tiers) == {"memory"}  # the disk was swept by the first worker
    assert two.tiers["memory"].entries == 1  # every worker sweeps its own memory
    lease = next((tmp_path / "data").glob("sweep-*.lease"))
    old = lease.stat().st_mtime - 300
    os.utime(lease, (old, old))  # the interval has passed
    assert "disk" in (await sweepers[1].sweep()).tiers
    await first.aclose()
    await second.aclose()
