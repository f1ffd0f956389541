"""Purges reach every other process: workers on one host (file feed), the CLI, and replicas
on other hosts sharing Redis (stream feed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cache.invalidation.test_purge import CORPUS, NOW, entry, remaining
from tests.conftest import LiveApp
from voicecache.cache.invalidation.feed import FileFeed, PurgeFollower, attach
from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import purge
from voicecache.cache.tiers import DiskTier, MemoryTier, TieredCache
from voicecache.cache.tiers.redis import RedisTier
from voicecache.cli.main import app
from voicecache.cluster.purge_feed import build_feed
from voicecache.cluster.redis import RedisHandle
from voicecache.settings import Settings

LINE = {"text": "Purge me everywhere.", "voice": "en"}


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def in_memory(live: LiveApp, key: str) -> bool:
    memory = live.gateway.cache.memory
    assert memory is not None
    return memory.header(f"{key}.wav") is not None


def test_a_purge_in_one_worker_reaches_the_others(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    settings = settings.model_copy(update={"purge_poll_interval": 0.02})
    one, two = serve(settings), serve(settings)  # two workers: same data dir, own memory
    key = one.client.post("/tts", json=LINE).headers["x-cache-key"]
    assert two.client.post("/tts", json=LINE).headers["x-cache"] == "HIT"  # disk → memory
    wait_for(lambda: in_memory(two, key))  # the promotion runs in the background
    assert in_memory(one, key)
    report = one.client.delete("/admin/cache", params={"voice": "en"}).json()
    assert report["tiers"]["disk"]["entries"] == 2
    wait_for(lambda: not in_memory(two, key))
    assert two.client.post("/tts", json=LINE).headers["x-cache"] == "MISS"


def test_the_cli_purge_reaches_a_running_server(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    settings = settings.model_copy(update={"purge_poll_interval": 0.02})
    live = serve(settings)
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    result = CliRunner().invoke(
        app, ["purge", "--key", key], env={"VOICECACHE_DATA_DIR": str(settings.data_dir)}
    )
    assert result.exit_code == 0, result.output
    wait_for(lambda: not in_memory(live, key))
    assert live.client.post("/tts", json=LINE).headers["x-cache"] == "MISS"


async def test_file_feed_skips_old_partial_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "purges.jsonl"
    path.write_text('{"origin":"x","filter":{},"purged":[]}\n')  # before this process
    feed = FileFeed(path)
    assert await feed.poll() == []
    with path.open("a") as handle:
        handle.write("not json\n")
        handle.write('{"origin":"y","filter":{"voice":"en"},"purged":[]}\n')
        handle.write('{"origin":"z","fil')  # still being written
    notices = await feed.poll()
    assert [(n.origin, n.filter) for n in notices] == [("y", {"voice": "en"})]
    with path.open("a") as handle:
        handle.write('ter":{"tag":"t"},"purged":["a"]}\n')
    (later,) = await feed.poll()
    assert later.origin == "z" and later.purged == ("a",)


@pytest.mark.redis
async def test_replicas_on_other_hosts_follow_through_redis(tmp_path: Path, redis_url: str) -> None:
    def replica(name: str) -> TieredCache:
        return TieredCache(
            [
                MemoryTier(1 << 24, "lru"),
                RedisTier(RedisHandle.from_url(redis_url, timeout=10.0), clock=lambda: NOW),
                DiskTier(tmp_path / name / "cache", 1 << 24),
            ],
            clock=lambda: NOW,
        )

    here, there = replica("here"), replica("there")
    for cache in (here, there):
        for name, fields in CORPUS.items():
            for tier in cache.tiers:  # directly, so a failed write fails loudly here
                await tier.set(*entry(name, **fields))
    # Different data dirs: only the Redis stream connects the two.
    feed_here = attach(here, build_feed(tmp_path / "here", here.tiers[1].redis))
    feed_there = attach(there, build_feed(tmp_path / "there", there.tiers[1].redis))
    follower = PurgeFollower(there, feed_there, interval=0)
    own = PurgeFollower(here, feed_here, interval=0)
    assert await follower.follow_once() == 0  # starts reading the stream here
    assert await own.follow_once() == 0

    report = await purge(here, PurgeFilter.create(now=NOW, tag="event"))
    assert report.tiers["redis"].entries == 2
    assert await follower.follow_once() == 1
    assert await follower.follow_once() == 0  # each notice once
    expected = set(CORPUS) - {"en-event", "fr-event"}
    for tier in there.tiers:
        assert await remaining(tier) == expected, tier.name
    # It purged its own memory and disk, and left the shared Redis to the origin.
    await purge(there, PurgeFilter.create(now=NOW, voice="cmn"))
    assert await own.follow_once() == 1
    assert await follower.follow_once() == 0  # applying a notice announces nothing again
    for tier in here.tiers:
        assert await remaining(tier) == expected - {"cmn-expired", "cmn-pinned"}, tier.name
    await here.aclose()
    await there.aclose()
