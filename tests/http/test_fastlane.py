"""The fast lane answers memory hits exactly as the slow path would, and hands everything else
on untouched."""

from __future__ import annotations

from collections.abc import Iterator

from tests.conftest import LiveApp

LINE = {"text": "Thanks for the gift!", "voice": "en"}
COMPARED = ("content-type", "content-length", "x-cache", "x-cache-key", "x-cache-tier", "etag")


def test_fast_hit_matches_slow_hit(live: LiveApp) -> None:
    live.client.post("/tts", json=LINE)
    fast = live.client.post("/tts", json=LINE)
    # A conditional header sends the request down the slow path.
    slow = live.client.post("/tts", json=LINE, headers={"If-None-Match": '"other"'})
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    for name in COMPARED:
        assert fast.headers.get(name) == slow.headers.get(name), name
    assert fast.headers["x-cache"] == "HIT"


def test_openai_route_hits_in_the_fast_lane(live: LiveApp) -> None:
    body = {"model": "tts-1", "input": "Welcome back!", "voice": "alloy"}
    first = live.client.post("/v1/audio/speech", json=body)
    again = live.client.post("/v1/audio/speech", json=body)
    assert first.headers["x-cache"] == "MISS" and again.headers["x-cache"] == "HIT"
    assert again.headers["content-type"] == "audio/mpeg"
    assert again.content == first.content


def test_distinct_bodies_never_share_a_key(live: LiveApp) -> None:
    keys = set()
    for change in ({}, {"emotion": "sad"}, {"format": "mp3"}, {"speed": 1.1}):
        live.client.post("/tts", json={**LINE, **change})
        hit = live.client.post("/tts", json={**LINE, **change})
        assert hit.headers["x-cache"] == "HIT"
        keys.add((hit.headers["x-cache-key"], hit.headers["content-type"]))
    assert len(keys) == 4


def test_no_cache_bypasses_the_fast_lane(live: LiveApp) -> None:
    live.client.post("/tts", json=LINE)
    fresh = live.client.post("/tts", json=LINE, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "MISS"
    assert live.engine_calls() == 2


def test_streamed_body_is_read_whole(live: LiveApp) -> None:
    live.client.post("/tts", json=LINE)
    raw = b'{"text": "Thanks for the gift!", "voice": "en"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 7):
            yield raw[start : start + 7]

    hit = live.client.post("/tts", content=chunks(), headers={"content-type": "application/json"})
    assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"


def test_errors_still_come_from_the_app(live: LiveApp) -> None:
    bad = live.client.post(
        "/tts", content=b'{"text": "hi", "voice": ', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json() == {"detail": "malformed JSON body"}
    unknown = live.client.post("/tts", json={"text": "hi", "voice": "nope"})
    assert unknown.status_code == 422 and "unknown voice" in unknown.json()["detail"]
    missing = live.client.get("/v1/audio/" + "0" * 64 + ".wav")
    assert missing.status_code == 404
