"""Audio fetched with an API key is `Cache-Control: private` unless the operator opts in with
`VOICECACHE_PUBLIC_AUDIO=true` (issue #12 item 9): a shared cache (a CDN) in front of
voicecache must not hand keyed audio to callers without a key (RFC 9111 §3.5)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import LiveApp
from tests.security.test_auth import LINE, bearer
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings


def every_path(live: LiveApp, token: str) -> list[httpx.Response]:
    """A miss, a memory hit (the fast lane), audio by key (fast lane and slow path), and the
    OpenAI route."""
    miss = live.client.post("/tts", json=LINE, headers=bearer(token))
    hit = live.client.post("/tts", json=LINE, headers=bearer(token))
    url = f"/v1/audio/{miss.headers['x-cache-key']}.wav"
    by_key = live.client.get(url, headers=bearer(token))
    by_key_range = live.client.get(url, headers={**bearer(token), "Range": "bytes=0-99"})
    openai = live.client.post(
        "/v1/audio/speech",
        json={"input": LINE["text"], "voice": "en", "response_format": "wav"},
        headers=bearer(token),
    )
    assert [r.headers.get("x-cache") for r in (miss, hit)] == ["MISS", "HIT"]
    assert hit.headers["x-cache-tier"] == "memory"
    assert by_key_range.status_code == 206
    return [miss, hit, by_key, by_key_range, openai]


def test_audio_fetched_with_a_key_is_private(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    token, _ = KeyStore(settings.keys_path).add("acme", ["speak"])
    live = serve(settings)
    for response in every_path(live, token):
        assert response.status_code in (200, 206), response.text
        assert response.headers["cache-control"].startswith("private, max-age="), (
            response.request.url,
            response.headers["cache-control"],
        )


def test_the_operator_may_make_keyed_audio_public(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    token, _ = KeyStore(settings.keys_path).add("acme", ["speak"])
    live = serve(Settings(data_dir=settings.data_dir, public_audio="true"))
    for response in every_path(live, token):
        assert response.headers["cache-control"].startswith("public, max-age=")


def test_without_keys_shared_audio_stays_public(live: LiveApp) -> None:
    response = live.client.post("/tts", json=LINE)
    assert response.headers["cache-control"].startswith("public, max-age=")
    refused = live.client.post("/tts", json={**LINE, "voice": "nope"})
    assert "cache-control" not in refused.headers
