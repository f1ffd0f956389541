"""The core product over real HTTP on loopback: the embedded engine, memory and disk tiers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import httpx
import pytest
import soundfile as sf

from tests.conftest import LiveApp
from voicecache.settings import Settings

LINE = {"text": "Victory is ours!", "voice": "en"}


def test_miss_then_hit_byte_identical(live: LiveApp) -> None:
    first = live.client.post("/tts", json=LINE)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["content-type"] == "audio/wav"
    key = first.headers["x-cache-key"]
    assert len(key) == 64
    assert first.headers["etag"] == f'"{key}.wav"'
    data, rate = sf.read(io.BytesIO(first.content))
    assert rate == 22050 and len(data) > rate * 0.5

    second = live.client.post("/tts", json=LINE)
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["x-cache-tier"] == "memory"
    assert second.headers["x-cache-key"] == key
    assert second.content == first.content
    assert live.engine_calls() == 1


def test_hit_survives_restart_from_disk(live: LiveApp) -> None:
    first = live.client.post("/tts", json=LINE)
    live.restart()
    again = live.client.post("/tts", json=LINE)
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["x-cache-tier"] == "disk"
    assert again.content == first.content
    assert live.engine_calls() == 0  # the new gateway never called its engine
    third = live.client.post("/tts", json=LINE)
    assert third.headers["x-cache-tier"] == "memory"  # promoted


def test_equivalent_texts_share_one_entry(live: LiveApp) -> None:
    a = live.client.post("/tts", json={"text": "你好", "voice": "cmn"})
    b = live.client.post("/tts", json={"text": "\u3000你好 ", "voice": "cmn"})
    assert a.headers["x-cache"] == "MISS" and b.headers["x-cache"] == "HIT"
    assert a.content == b.content


@pytest.mark.parametrize(
    "change", [{"emotion": "happy"}, {"voice": "en-us"}, {"speed": 1.5}, {"voice": "en+f3"}]
)
def test_other_dimensions_never_share_audio(live: LiveApp, change: dict[str, object]) -> None:
    base = live.client.post("/tts", json=LINE)
    other = live.client.post("/tts", json={**LINE, **change})
    assert other.headers["x-cache"] == "MISS"
    assert other.headers["x-cache-key"] != base.headers["x-cache-key"]
    assert other.content != base.content


def test_emotions_sound_different(live: LiveApp) -> None:
    lengths = {}
    for emotion in ("neutral", "happy", "sad", "angry"):
        response = live.client.post("/tts", json={**LINE, "emotion": emotion})
        assert response.status_code == 200
        lengths[emotion] = response.content
    assert len(set(lengths.values())) == 4


@pytest.mark.parametrize(
    ("fmt", "content_type", "rate"),
    [("flac", "audio/flac", 22050), ("mp3", "audio/mpeg", 22050), ("opus", "audio/ogg", 24000)],
)
def test_other_formats_are_transcoded_from_the_cache(
    live: LiveApp, fmt: str, content_type: str, rate: int
) -> None:
    live.client.post("/tts", json=LINE)
    response = live.client.post("/tts", json={**LINE, "format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert response.headers["x-cache"] == "HIT"  # from the canonical entry, no engine call
    assert live.engine_calls() == 1
    info = sf.info(io.BytesIO(response.content))
    assert info.samplerate == rate
    again = live.client.post("/tts", json={**LINE, "format": fmt})
    assert again.headers["x-cache-tier"] == "memory" and again.content == response.content


def test_pcm_is_raw_24k(live: LiveApp) -> None:
    wav = live.client.post("/tts", json=LINE)
    pcm = live.client.post("/tts", json={**LINE, "format": "pcm"})
    assert pcm.headers["content-type"] == "audio/pcm"
    seconds = sf.info(io.BytesIO(wav.content)).duration
    assert abs(len(pcm.content) / 2 / 24000 - seconds) < 0.01


async def test_fifty_concurrent_identical_misses_call_the_engine_once(live: LiveApp) -> None:
    line = {"text": "Fifty clients ask for this at the same moment.", "voice": "en"}
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        responses = await asyncio.gather(*(client.post("/tts", json=line) for _ in range(50)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses}) == 1
    assert live.engine_calls() == 1
    statuses = {r.headers["x-cache"] for r in responses}
    assert "MISS" in statuses and statuses <= {"MISS", "COALESCED", "HIT"}
    assert sum(r.headers["x-cache"] == "MISS" for r in responses) == 1


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": "", "voice": "en"}, 422, "empty"),
        ({"text": "x" * 4001, "voice": "en"}, 422, "4000"),
        ({"text": "hi", "voice": "klingon"}, 422, "unknown voice"),
        ({"text": "hi", "voice": "en", "emotion": "ecstatic"}, 422, "accepted: neutral"),
        ({"text": "hi", "voice": "en", "speed": 10}, 422, "speed"),
        ({"text": "hi", "voice": "en", "format": "aiff"}, 422, "format"),
        ({"text": "hi", "voice": "en", "engine": "nope"}, 422, "unknown engine"),
        ({"voice": "en"}, 422, "text"),
        ({"text": 5, "voice": "en"}, 422, "text"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    live: LiveApp, body: dict[str, object], status: int, fragment: str
) -> None:
    response = live.client.post("/tts", json=body)
    assert response.status_code == status
    assert fragment in response.json()["detail"]


def test_malformed_json_is_400(live: LiveApp) -> None:
    response = live.client.post(
        "/tts", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "malformed JSON body"}


def test_openai_route_with_extension_fields(live: LiveApp) -> None:
    body = {
        "model": "tts-1",
        "input": "Thanks for the gift!",
        "voice": "en",
        "response_format": "wav",
        "emotion": "happy",
    }
    first = live.client.post("/v1/audio/speech", json=body)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    native = live.client.post(
        "/tts", json={"text": "Thanks for the gift!", "voice": "en", "emotion": "happy"}
    )
    assert native.headers["x-cache"] == "HIT"  # one cache behind both protocols
    assert native.content == first.content


def test_official_openai_client_works_unchanged(live: LiveApp) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    first = client.audio.speech.create(model="tts-1", voice="alloy", input="Welcome, new follower")
    second = client.audio.speech.create(model="tts-1", voice="alloy", input="Welcome, new follower")
    assert sf.info(io.BytesIO(first.content)).format == "MP3"
    assert second.content == first.content
    assert second.response.headers["x-cache"] == "HIT"
    assert first.response.headers["content-type"] == "audio/mpeg"


def test_healthz_voices_and_docs(live: LiveApp) -> None:
    health = live.client.get("/healthz").json()
    assert health["status"] == "ok" and health["default_engine"] == "espeak"
    voices = live.client.get("/v1/voices").json()
    espeak = voices["engines"]["espeak"]
    assert {"en", "cmn"} <= {v["id"] for v in espeak["voices"]}
    assert {"neutral", "happy", "sad", "angry"} <= set(espeak["emotions"])
    assert live.client.get("/docs").status_code == 200
    assert "/tts" in live.client.get("/openapi.json").json()["paths"]


def test_model_selects_engine_by_name(serve: Callable[..., LiveApp], settings: Settings) -> None:
    app = serve(settings.model_copy(update={"engines": {}}))
    by_name = app.client.post(
        "/v1/audio/speech", json={"model": "espeak", "input": "hi", "voice": "en"}
    )
    by_openai_name = app.client.post(
        "/v1/audio/speech", json={"model": "gpt-4o-mini-tts", "input": "hi", "voice": "en"}
    )
    assert by_name.status_code == by_openai_name.status_code == 200
    assert by_openai_name.headers["x-cache"] == "HIT"


def test_every_listed_espeak_voice_speaks(live: LiveApp) -> None:
    voices = live.client.get("/v1/voices").json()
    listed = [v["id"] for v in voices["engines"]["espeak"]["voices"]]
    assert {"en", "en-gb", "cmn", "alloy"} <= set(listed)
    for voice in [*listed, "en-gb+f2", "cmn+m3"]:
        response = live.client.post("/tts", json={"text": "Hello 你好", "voice": voice})
        assert response.status_code == 200, (voice, response.text)
