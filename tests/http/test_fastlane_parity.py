"""The fast lane answers only requests the routes accept, and its memo is bounded (issue #12
items 4, 13). Parity: the same requests go to an app with the fast lane and to one without
it, and must get the same status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LiveApp
from tests.servers import UvicornThread
from voicecache.http.app import create_app
from voicecache.http.middleware.fastlane import FastLane
from voicecache.settings import Settings

LINE = {"text": "Parity matters.", "voice": "en"}
BODY = json.dumps(LINE).encode()
JSON = {"content-type": "application/json"}


def fast_lane_of(live: LiveApp) -> FastLane:
    """The app's FastLane instance (the middleware stack is built on the first request)."""
    layer: Any = live.app.middleware_stack
    while layer is not None and not isinstance(layer, FastLane):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, FastLane)
    return layer


@pytest.fixture
def pair(serve: Callable[..., LiveApp], settings: Settings) -> tuple[LiveApp, httpx.Client]:
    """An app with the fast lane (warm) and a client for the same app without it."""
    with_lane = serve(settings)
    without = create_app(settings.model_copy(update={"data_dir": settings.data_dir / "slow"}))
    without.user_middleware = [m for m in without.user_middleware if m.cls is not FastLane]
    server = UvicornThread(without, lifespan="on").start()
    slow = httpx.Client(base_url=server.url, timeout=30)
    for client in (with_lane.client, slow):
        for route, body in (("/tts", LINE), ("/v1/audio/speech", {"input": LINE["text"],
                                                                   "voice": "en"})):  # fmt: skip
            assert client.post(route, json=body).status_code == 200
    yield with_lane, slow
    slow.close()
    server.stop()


def speech_cases(key: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    openai = json.dumps({"input": LINE["text"], "voice": "en"}).encode()
    return [
        ("POST", "/tts", BODY, JSON),
        ("POST", "/tts", BODY, {"content-type": "application/json; charset=utf-8"}),
        ("POST", "/tts", BODY, {"content-type": "APPLICATION/JSON"}),
        ("POST", "/tts", BODY, {"content-type": "application/vnd.voice+json"}),
        ("POST", "/tts", BODY, {"content-type": "text/plain"}),
        ("POST", "/tts", BODY, {}),
        ("POST", "/tts", BODY, {"content-type": "application/x-www-form-urlencoded"}),
        ("POST", "/tts", BODY, {**JSON, "x-cache-tags": "bad tag!"}),
        ("POST", "/tts", BODY, {**JSON, "x-cache-tags": ",".join(f"t{i}" for i in range(20))}),
        ("POST", "/tts", BODY, {**JSON, "x-cache-tags": "event,vip"}),
        ("POST", "/tts", BODY, {**JSON, "x-personalized": "true"}),
        ("POST", "/tts", b"\xef\xbb\xbf" + BODY, JSON),
        ("POST", "/v1/audio/speech", openai, JSON),
        ("POST", "/v1/audio/speech", openai, {"content-type": "text/plain"}),
        ("POST", "/v1/audio/speech", openai, {**JSON, "x-cache-tags": "a b"}),
        ("GET", f"/v1/audio/{key}.wav", b"", {}),
        ("GET", f"/v1/audio/{key}.wav%0A", b"", {}),
        ("GET", f"/v1/audio/{key}.wav%0a%0a", b"", {}),
        ("GET", f"/v1/audio/{key.upper()}.wav", b"", {}),
        ("GET", f"/v1/audio/{key}.WAV", b"", {}),
    ]


def test_fast_lane_and_routes_agree(pair: tuple[LiveApp, httpx.Client]) -> None:
    fast, slow = pair
    key = fast.client.post("/tts", json=LINE).headers["x-cache-key"]
    assert slow.post("/tts", json=LINE).headers["x-cache-key"] == key
    differences = []
    for method, path, body, headers in speech_cases(key):
        a = fast.client.request(method, path, content=body, headers=headers)
        b = slow.request(method, path, content=body, headers=headers)
        if a.status_code != b.status_code:
            differences.append((method, path, headers, a.status_code, b.status_code))
    assert differences == []


def test_the_fast_lane_still_answers_plain_hits(live: LiveApp) -> None:
    live.client.post("/tts", json=LINE)
    lane = fast_lane_of(live)
    before = lane.answered
    for headers in (JSON, {"content-type": "application/json; charset=utf-8"},
                    {**JSON, "x-cache-tags": "event,vip"}):  # fmt: skip
        hit = live.client.post("/tts", content=BODY, headers=headers)
        assert hit.headers["x-cache"] == "HIT"
    assert lane.answered == before + 3


def test_the_memo_is_keyed_by_digest_and_bounded_by_bytes(
    serve: Callable[..., LiveApp], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FastLane, "memo_max_bytes", 40 * FastLane.MEMO_ENTRY_BYTES)
    live = serve(settings)
    live.client.post("/tts", json=LINE)
    lane = fast_lane_of(live)
    for pad in range(300):  # 300 distinct bodies, one line: padding defeats a raw-body memo
        body = BODY[:-1] + b" " * pad + b"}"
        hit = live.client.post("/tts", content=body, headers=JSON)
        assert hit.headers["x-cache"] == "HIT"
    assert lane.memo_entries <= 40
    assert lane.memo_bytes <= 40 * lane.MEMO_ENTRY_BYTES
    assert all(len(key) <= 40 for key in lane.memo_keys())  # digests, never bodies

    entries = lane.memo_entries
    big = BODY[:-1] + b" " * (lane.MEMO_MAX_BODY + 1) + b"}"
    for _ in range(3):  # big bodies are answered but never remembered
        assert live.client.post("/tts", content=big, headers=JSON).headers["x-cache"] == "HIT"
    assert lane.memo_entries == entries
