"""Cache policy over real HTTP: TTL expiry with an injected clock, Cache-Control, pinning,
sliding and popular entries, stale-while-revalidate, and model-version invalidation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cache.test_policy import Clock
from tests.cache.tiers.disk_helpers import stored_files, stored_header
from tests.conftest import LiveApp
from tests.fixtures_servers import FakeEngineServer
from voicecache.bootstrap import build
from voicecache.cache.tiers import DiskTier
from voicecache.model import EntryMeta
from voicecache.settings import Settings, TtlRule

LINE = {"text": "The tower has fallen.", "voice": "en"}


def start(serve: Callable[..., LiveApp], settings: Settings, clock: Clock) -> LiveApp:
    return serve(settings, services=build(settings, clock=clock))


def header(live: LiveApp, key: str, fmt: str = "wav") -> EntryMeta | None:
    memory = live.gateway.cache.memory
    assert memory is not None
    return memory.header(f"{key}.{fmt}")


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll for a background effect (a header touch, a sweep) of the server's loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def tts(live: LiveApp, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    response = live.client.post("/tts", json=body or LINE, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_ttl_expiry_with_injected_clock(serve: Callable[..., LiveApp], settings: Settings) -> None:
    settings = settings.model_copy(update={"default_ttl": 60.0, "grace": 3600.0})
    clock = Clock()
    live = start(serve, settings, clock)
    assert tts(live).headers["x-cache"] == "MISS"
    clock.advance(59)
    assert tts(live).headers["x-cache"] == "HIT"
    clock.advance(2)  # past the TTL: within grace, but the engine is fine, so re-synthesize
    assert tts(live).headers["x-cache"] == "MISS"
    assert live.engine_calls() == 2
    assert tts(live).headers["x-cache"] == "HIT"


def test_cache_control_over_http(serve: Callable[..., LiveApp], settings: Settings) -> None:
    settings = settings.model_copy(update={"default_ttl": 600.0})
    clock = Clock()
    live = start(serve, settings, clock)
    key = tts(live).headers["x-cache-key"]
    # no-cache: skip the lookup, synthesize, and store the new audio.
    assert tts(live, **{"Cache-Control": "no-cache"}).headers["x-cache"] == "MISS"
    assert live.engine_calls() == 2
    assert tts(live).headers["x-cache"] == "HIT"
    # no-store: a new line is synthesized but not kept.
    other = {"text": "Do not keep this line.", "voice": "en"}
    assert tts(live, other, **{"Cache-Control": "no-store"}).headers["x-cache"] == "MISS"
    assert tts(live, other).headers["x-cache"] == "MISS"
    # max-age shortens the TTL of what is stored...
    short = {"text": "A short-lived line.", "voice": "en"}
    short_key = tts(live, short, **{"Cache-Control": "max-age=30"}).headers["x-cache-key"]
    stored = header(live, short_key)
    assert stored is not None and stored.expires_at == stored.created + 30
    # ...but never lengthens it.
    tts(live, **{"Cache-Control": "no-cache, max-age=999999"})
    stored = header(live, key)
    assert stored is not None and stored.expires_at == stored.created + 600
    clock.advance(31)
    assert tts(live, short).headers["x-cache"] == "MISS"
    assert tts(live).headers["x-cache"] == "HIT"


def test_tags_and_personalized_from_headers_select_rules(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    settings = settings.model_copy(
        update={
            "ttl_rules": [
                TtlRule(tag="event", ttl="1h"),
                TtlRule(personalized=True, ttl="5m"),
            ]
        }
    )
    live = start(serve, settings, Clock())
    tagged = tts(live, {"text": "Event line", "voice": "en"}, **{"X-Cache-Tags": "x, event"})
    personal = tts(live, {"text": "Hi Ana", "voice": "en"}, **{"X-Personalized": "true"})
    meta_tagged = header(live, tagged.headers["x-cache-key"])
    meta_personal = header(live, personal.headers["x-cache-key"])
    assert meta_tagged is not None and meta_tagged.tags == ("event", "x")
    assert meta_tagged.expires_at == meta_tagged.created + 3600
    assert meta_personal is not None and meta_personal.personalized
    assert meta_personal.expires_at == meta_personal.created + 300


@pytest.mark.parametrize("memory_policy", ["tinylfu", "lru"])
def test_pinned_entries_survive_memory_and_disk_pressure(
    serve: Callable[..., LiveApp], settings: Settings, memory_policy: str
) -> None:
    settings = settings.model_copy(
        update={
            "memory_policy": memory_policy,
            "memory_bytes": 300_000,
            "disk_bytes": 500_000,
            "ttl_rules": [TtlRule(voice="fr", pinned=True)],
            "default_ttl": 60.0,
        }
    )
    clock = Clock()
    live = start(serve, settings, clock)
    pinned = tts(live, {"text": "Vive le roi.", "voice": "fr"})
    key = pinned.headers["x-cache-key"]
    for index in range(30):
        tts(live, {"text": f"Filler line number {index} for the cache.", "voice": "en"})
    memory = live.gateway.cache.memory
    disk = live.gateway.cache.tiers[1]
    assert isinstance(disk, DiskTier) and memory is not None
    # There was pressure in both tiers (W-TinyLFU refuses newcomers rather than evicting).
    assert memory.evictions + memory.rejected > 0 and disk.evictions > 0
    assert memory.header(f"{key}.wav") is not None
    assert memory.header(f"{key}.flac") is not None
    assert {f"{key}.flac", f"{key}.wav"} <= set(stored_files(disk.root))
    clock.advance(10 * 365 * 86400)  # pinned: never expires
    again = tts(live, {"text": "Vive le roi.", "voice": "fr"})
    assert again.headers["x-cache"] == "HIT" and again.headers["x-cache-tier"] == "memory"
    assert again.content == pinned.content


def test_sliding_ttl_extends_on_hits_up_to_max_ttl(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    settings = settings.model_copy(
        update={
            "ttl_rules": [TtlRule(voice="en", sliding=True, ttl=100, max_ttl=250)],
            "popularity_hits": 0,
        }
    )
    clock = Clock()
    live = start(serve, settings, clock)
    key = tts(live).headers["x-cache-key"]
    created = clock.now
    clock.advance(90)
    assert tts(live).headers["x-cache"] == "HIT"
    wait_for(lambda: (header(live, key) or _never()).expires_at == created + 190)
    clock.advance(90)  # 180 s: a fixed TTL would have expired at 100
    assert tts(live).headers["x-cache"] == "HIT"
    wait_for(lambda: (header(live, key) or _never()).expires_at == created + 250)  # capped
    clock.advance(65)  # 245 s
    assert tts(live).headers["x-cache"] == "HIT"
    clock.advance(10)  # 255 s: past max_ttl, whatever the hits
    assert tts(live).headers["x-cache"] == "MISS"


def test_popular_entries_get_a_longer_ttl(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    settings = settings.model_copy(
        update={"default_ttl": 100.0, "popularity_hits": 3, "popularity_factor": 2.0}
    )
    clock = Clock()
    live = start(serve, settings, clock)
    key = tts(live).headers["x-cache-key"]
    created = clock.now
    for _ in range(3):
        assert tts(live).headers["x-cache"] == "HIT"
    wait_for(lambda: (header(live, key) or _never()).expires_at == created + 200)
    disk = live.gateway.cache.tiers[1]
    assert isinstance(disk, DiskTier)
    # The touch reaches the persistent tier too.
    wait_for(
        lambda: (stored_header(disk.root, f"{key}.wav") or _never()).expires_at == created + 200
    )
    clock.advance(150)
    assert tts(live).headers["x-cache"] == "HIT"
    other = {"text": "An unpopular line.", "voice": "en"}
    tts(live, other)
    assert live.engine_calls() == 2


def test_stale_while_revalidate_serves_stale_at_once_and_refreshes_once(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    settings = settings.model_copy(
        update={"default_ttl": 60.0, "grace": 3600.0, "stale_while_revalidate": True}
    )
    clock = Clock()
    live = start(serve, settings, clock)
    first = tts(live)
    clock.advance(61)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/tts", json=LINE) for _ in range(20)))

    responses = asyncio.run(burst())
    statuses = [response.headers["x-cache"] for response in responses]
    assert "STALE" in statuses and set(statuses) <= {"STALE", "HIT"}
    stale = next(r for r in responses if r.headers["x-cache"] == "STALE")
    assert stale.content == first.content
    wait_for(lambda: live.engine_calls() == 2)
    wait_for(lambda: tts(live).headers["x-cache"] == "HIT")
    assert live.engine_calls() == 2  # one background refresh for the whole burst


def test_model_version_bump_makes_the_next_request_a_miss(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    old = serve(settings.model_copy(update={"espeak_model_version": "espeak-ng-1.52"}))
    first = tts(old)
    assert tts(old).headers["x-cache"] == "HIT"
    old.close()
    old_key = first.headers["x-cache-key"]
    assert any(eid.startswith(old_key) for eid in stored_files(settings.cache_dir))
    bumped = settings.model_copy(
        update={"espeak_model_version": "espeak-ng-1.53", "sweep_interval": 0.05}
    )
    new = serve(bumped)
    again = tts(new)
    assert again.headers["x-cache"] == "MISS"
    assert again.headers["x-cache-key"] != first.headers["x-cache-key"]
    assert new.engine_calls() == 1
    # The sweeper started by the app removes the unreachable generation from disk.
    new_key = again.headers["x-cache-key"]
    wait_for(lambda: not any(eid.startswith(old_key) for eid in stored_files(settings.cache_dir)))
    assert any(eid.startswith(new_key) for eid in stored_files(settings.cache_dir))


def _never() -> EntryMeta:
    raise AssertionError("entry missing from memory")


def emotivoice_settings(settings: Settings, url: str, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "emotivoice_url": url,
            "engine": "emotivoice",
            "default_voice": "8051",
            "engine_retries": 0,
            "emotivoice_timeout": 2.0,  # the hang below costs one timeout
            "default_ttl": 60.0,
            "grace": 600.0,
            **extra,
        }
    )


EMO_LINE = {"text": "欢迎来到直播间", "voice": "8051"}


def test_stale_is_served_while_the_engine_is_down_and_not_after_grace(
    serve: Callable[..., LiveApp], settings: Settings, fake_emotivoice: FakeEngineServer
) -> None:
    clock = Clock()
    live = start(serve, emotivoice_settings(settings, fake_emotivoice.url), clock)
    fresh = tts(live, EMO_LINE)
    assert fresh.headers["x-cache"] == "MISS"
    clock.advance(61)  # expired, within grace
    fake_emotivoice.controls.update(fail_next_n=1000, status_code=503)
    stale = tts(live, EMO_LINE)
    assert stale.headers["x-cache"] == "STALE" and stale.content == fresh.content
    fake_emotivoice.controls.update(fail_next_n=0, hang=True)  # now it times out instead
    try:
        assert tts(live, EMO_LINE).headers["x-cache"] == "STALE"
    finally:
        fake_emotivoice.controls.update(hang=False)
    fake_emotivoice.controls.update(fail_next_n=1000)
    clock.advance(600)  # past the grace period: never served again
    gone = live.client.post("/tts", json=EMO_LINE)
    assert gone.status_code in {502, 503} and "detail" in gone.json()
    assert fake_emotivoice.controls.calls >= 3


def test_stale_while_revalidate_with_the_engine_down_keeps_serving_stale(
    serve: Callable[..., LiveApp], settings: Settings, fake_emotivoice: FakeEngineServer
) -> None:
    clock = Clock()
    configured = emotivoice_settings(settings, fake_emotivoice.url, stale_while_revalidate=True)
    live = start(serve, configured, clock)
    fresh = tts(live, EMO_LINE)
    clock.advance(61)
    fake_emotivoice.controls.update(fail_next_n=1000, status_code=500)
    for _ in range(3):
        stale = tts(live, EMO_LINE)
        assert stale.headers["x-cache"] == "STALE" and stale.content == fresh.content
    wait_for(lambda: fake_emotivoice.controls.calls >= 2)  # the background refreshes failed
    fake_emotivoice.controls.update(fail_next_n=0)
    tts(live, EMO_LINE)  # stale once more, and its refresh now succeeds
    wait_for(lambda: tts(live, EMO_LINE).headers["x-cache"] == "HIT")
