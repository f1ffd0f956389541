"""HTTP caching of audio: ETag, Cache-Control, 304, Range/206, HEAD and `GET /v1/audio/{key}`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.conftest import LiveApp, error_message
from tests.security.test_auth import bearer, speak, upload
from tests.voice_samples import master_key
from voicecache.bootstrap import build
from voicecache.http.responses import (
    PINNED_MAX_AGE,
    RangeNotSatisfiable,
    cache_control,
    cache_headers,
    etag_matches,
    parse_range,
)
from voicecache.model import EntryMeta, SpeechResult
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings

LINE = {"text": "Range requests keep Safari happy.", "voice": "en"}


def _result(**meta_changes: object) -> SpeechResult:
    meta = EntryMeta(
        key="k" * 64, format="wav", sample_rate=22050, duration=1.0, size=4, checksum="c",
        created=1000.0, expires_at=4600.0, stale_until=90000.0,
    )  # fmt: skip
    return SpeechResult(b"RIFF", "wav", "k" * 64, "HIT", "memory", replace(meta, **meta_changes))


def test_cache_control_follows_ttl_privacy_and_storage() -> None:
    assert cache_control(_result(), now=1600.0) == "public, max-age=3000"
    assert cache_control(_result(), now=5000.0) == "public, max-age=0"  # stale: revalidate
    assert cache_control(_result(personalized=True), now=1600.0) == "private, max-age=3000"
    assert cache_control(_result(tenant="acme"), now=1600.0) == "private, max-age=3000"
    pinned = _result(expires_at=None, stale_until=None)
    assert cache_control(pinned, now=1600.0) == f"public, max-age={PINNED_MAX_AGE}"
    assert cache_control(replace(_result(), stored=False), now=1600.0) == "no-store"


def test_cache_headers_are_raw_asgi_pairs() -> None:
    headers = dict(cache_headers(_result(), now=1600.0))
    assert headers[b"etag"] == b'"' + b"k" * 64 + b'.wav"'
    assert headers[b"accept-ranges"] == b"bytes"
    assert headers[b"content-type"] == b"audio/wav"
    assert headers[b"x-cache"] == b"HIT" and headers[b"x-cache-tier"] == b"memory"
    assert b"content-length" not in headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=0-1,5-6", None),  # several ranges: we may send the whole body
        ("items=0-1", None),
        ("bytes=abc", None),
        ("bytes=5-2", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=5000-6000"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_etag_matching_is_weak_and_takes_lists() -> None:
    assert etag_matches('"a.wav"', '"a.wav"')
    assert etag_matches('W/"a.wav"', '"a.wav"')
    assert etag_matches('"x", "a.wav"', '"a.wav"')
    assert etag_matches("*", '"a.wav"')
    assert not etag_matches('"a.mp3"', '"a.wav"')
    assert not etag_matches(None, '"a.wav"')


def test_synthesis_responses_carry_cache_headers(live: LiveApp) -> None:
    miss = live.client.post("/tts", json=LINE)
    scope, _, max_age = miss.headers["cache-control"].partition(", max-age=")
    assert scope == "public" and 30 * 86400 - 5 <= int(max_age) <= 30 * 86400
    assert miss.headers["accept-ranges"] == "bytes"
    assert int(miss.headers["content-length"]) == len(miss.content)
    hit = live.client.post("/v1/audio/speech", json={"input": LINE["text"], "voice": "en"})
    assert hit.headers["accept-ranges"] == "bytes"
    assert hit.headers["cache-control"].startswith("public, max-age=")
    personal = live.client.post("/tts", json={**LINE, "text": "Hi Ann", "personalized": True})
    assert personal.headers["cache-control"].startswith("private, max-age=")
    unstored = live.client.post(
        "/tts", json={**LINE, "text": "Do not keep"}, headers={"Cache-Control": "no-store"}
    )
    assert unstored.status_code == 200
    assert unstored.headers["cache-control"] == "no-store"


def test_audio_by_key_get_head_304_and_ranges(live: LiveApp) -> None:
    made = live.client.post("/tts", json=LINE)
    key, body = made.headers["x-cache-key"], made.content
    url = f"/v1/audio/{key}.wav"

    got = live.client.get(url)
    assert got.status_code == 200 and got.content == body
    assert got.headers["etag"] == f'"{key}.wav"' == made.headers["etag"]
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["x-cache"] == "HIT"

    head = live.client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(body)
    assert head.headers["etag"] == got.headers["etag"]

    again = live.client.get(url, headers={"If-None-Match": got.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == got.headers["etag"]
    assert again.headers["cache-control"].startswith("public, max-age=")
    changed = live.client.get(url, headers={"If-None-Match": '"other.wav"'})
    assert changed.status_code == 200

    part = live.client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 0-99/{len(body)}"
    assert part.content == body[:100] and part.headers["content-length"] == "100"
    tail = live.client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == body[-10:]
    outside = live.client.get(url, headers={"Range": f"bytes={len(body)}-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(body)}"
    stale_validator = live.client.get(
        url, headers={"Range": "bytes=0-9", "If-Range": '"older.wav"'}
    )
    assert stale_validator.status_code == 200 and stale_validator.content == body


def test_audio_by_key_transcodes_other_formats_once(live: LiveApp) -> None:
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    mp3 = live.client.get(f"/v1/audio/{key}.mp3")
    assert mp3.status_code == 200
    assert mp3.headers["content-type"] == "audio/mpeg"
    assert mp3.headers["etag"] == f'"{key}.mp3"'
    assert live.client.get(f"/v1/audio/{key}.mp3").content == mp3.content
    assert live.engine_calls() == 1


@pytest.mark.parametrize(
    "path", [f"/v1/audio/{'0' * 64}.wav", "/v1/audio/nothex.wav", f"/v1/audio/{'0' * 64}.xyz"]
)
def test_audio_by_key_absent_is_404(live: LiveApp, path: str) -> None:
    response = live.client.get(path)
    assert response.status_code == 404
    assert "no audio stored" in error_message(response)
    assert response.headers["cache-control"] == "no-store"  # it may exist a moment later


def test_max_age_counts_down_with_the_clock(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    now = [1_000_000.0]
    settings = settings.model_copy(update={"default_ttl": 3600})
    live = serve(settings, services=build(settings, clock=lambda: now[0]))
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    now[0] += 600
    response = live.client.get(f"/v1/audio/{key}.wav")
    assert response.headers["cache-control"] == "public, max-age=3000"


def test_private_voice_audio_by_key_is_private_and_only_for_its_tenant(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    secured_settings = settings.model_copy(update={"master_key": master_key()})
    store = KeyStore(secured_settings.keys_path)
    keys = {"a": store.add("acme", ["speak", "voices"])[0], "b": store.add("globex", ["speak"])[0]}
    secured = serve(secured_settings)
    voice = upload(secured, keys["a"])
    made = speak(secured, keys["a"], voice)
    assert made.status_code == 200
    assert made.headers["cache-control"].startswith("private, max-age=")
    url = f"/v1/audio/{made.headers['x-cache-key']}.wav"
    mine = secured.client.get(url, headers=bearer(keys["a"]))
    assert mine.status_code == 200 and mine.content == made.content
    assert mine.headers["cache-control"].startswith("private, max-age=")
    assert secured.client.get(url, headers=bearer(keys["b"])).status_code == 404  # other tenant
    assert secured.client.get(url).status_code == 401
    shared = speak(secured, keys["b"])  # a built-in voice, but fetched with a key: private
    assert shared.headers["cache-control"].startswith("private, max-age=")
