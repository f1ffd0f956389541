"""Hits from the disk and Redis tiers go through the fast lane too: answered without the routes,
with the same bytes and headers, read once for a herd of identical requests, promoted into
memory, and never served when the stored copy is damaged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import LiveApp
from tests.security.test_auth import wait_for
from voicecache.cache.service import SpeechResult
from voicecache.settings import Settings

LINE = {"text": "Thanks for the gift!", "voice": "en"}


def count_routes(live: LiveApp) -> list[str]:
    """Calls that reached the routes (`speak` for speech, `fetch` for audio by key)."""
    routed: list[str] = []
    gateway = live.gateway
    speak, fetch = gateway.speak, gateway.fetch

    async def counting_speak(*args: Any, **kwargs: Any) -> SpeechResult:
        routed.append("speak")
        return await speak(*args, **kwargs)

    async def counting_fetch(*args: Any, **kwargs: Any) -> SpeechResult:
        routed.append("fetch")
        return await fetch(*args, **kwargs)

    gateway.speak = counting_speak  # type: ignore[method-assign]
    gateway.fetch = counting_fetch  # type: ignore[method-assign]
    return routed


def tiers(settings: Settings, names: str, **extra: Any) -> Settings:
    return settings.model_copy(update={"tiers": names.split(","), **extra})


@pytest.fixture(params=["disk", "redis"])
def cold(
    request: pytest.FixtureRequest, serve: Callable[..., LiveApp], settings: Settings
) -> LiveApp:
    """A server whose only tier is disk, or Redis."""
    extra: dict[str, Any] = {}
    if request.param == "redis":
        extra["redis_url"] = request.getfixturevalue("redis_url")
    return serve(tiers(settings, request.param, **extra))


@pytest.mark.redis
def test_cold_hits_are_answered_by_the_fast_lane(cold: LiveApp) -> None:
    tier = cold.gateway.cache.tiers[0].name
    made = cold.client.post("/tts", json=LINE)
    assert made.headers["x-cache"] == "MISS"
    key = made.headers["x-cache-key"]
    routed = count_routes(cold)

    hit = cold.client.post("/tts", json=LINE)
    by_key = cold.client.get(f"/v1/audio/{key}.wav")
    assert routed == []  # neither reached a route
    for answer in (hit, by_key):
        assert answer.status_code == 200 and answer.content == made.content
        assert answer.headers["x-cache"] == "HIT" and answer.headers["x-cache-tier"] == tier
        assert answer.headers["etag"] == made.headers["etag"]
    # The slow path answers the same (a conditional header sends a request there).
    slow = cold.client.get(f"/v1/audio/{key}.wav", headers={"If-None-Match": '"other"'})
    assert routed == ["fetch"]
    for name in ("content-type", "content-length", "etag", "x-cache", "x-cache-tier"):
        assert slow.headers[name] == by_key.headers[name], name
    assert slow.content == by_key.content
    assert cold.engine_calls() == 1


@pytest.mark.redis
def test_a_herd_of_redis_hits_reads_redis_once(
    serve: Callable[..., LiveApp], settings: Settings, redis_url: str
) -> None:
    live = serve(tiers(settings, "redis", redis_url=redis_url))
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]

    def gets() -> int:
        with redis.Redis.from_url(redis_url) as client:
            stats: dict[str, Any] = client.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))

    async def herd() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            return await asyncio.gather(*(client.get(f"/v1/audio/{key}.wav") for _ in range(64)))

    before = gets()
    answers = asyncio.run(herd())
    assert {a.status_code for a in answers} == {200}
    assert {a.headers["x-cache-tier"] for a in answers} == {"redis"}
    # Concurrent identical reads share one GET; 64 requests need far fewer than 64.
    assert gets() - before < 64 // 4


def test_a_disk_hit_is_promoted_into_memory(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)  # memory, disk
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    live.restart()  # memory is empty again, the disk still holds the line
    routed = count_routes(live)
    first = live.client.get(f"/v1/audio/{key}.wav")
    assert first.status_code == 200 and first.headers["x-cache-tier"] == "disk"
    wait_for(lambda: live.client.get(f"/v1/audio/{key}.wav").headers["x-cache-tier"] == "memory")
    assert routed == []


def test_a_damaged_copy_on_disk_is_never_served(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(tiers(settings, "disk"))
    made = live.client.post("/tts", json=LINE)
    key, audio = made.headers["x-cache-key"], made.content
    live.restart()  # a new process view: no stored copy verified yet
    # Flip one byte in the middle of the stored WAV, in place, as bit rot would.
    damaged = 0
    for path in settings.data_dir.rglob("*.val"):
        blob = path.read_bytes()
        at = blob.find(audio[1000:1064])
        if at >= 0:
            with path.open("r+b") as handle:
                handle.seek(at + 10)
                handle.write(bytes([blob[at + 10] ^ 0xFF]))
            damaged += 1
    assert damaged == 1
    errors = live.gateway.cache.errors["disk"]
    # The fast lane's first read verifies the copy and drops it; the route then makes the WAV
    # again from the stored canonical FLAC: the right bytes, never the damaged ones.
    by_key = live.client.get(f"/v1/audio/{key}.wav")
    assert by_key.status_code == 200 and by_key.content == audio
    assert live.gateway.cache.errors["disk"] > errors
    assert live.client.post("/tts", json=LINE).content == audio
    assert live.engine_calls() == 0  # this process never called the engine
