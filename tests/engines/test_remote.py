"""The remote engines over real HTTP against the fake EmotiVoice and OpenAI servers: the wire
format they send, the audio they decode, and the app wired to them by settings alone."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import LiveApp
from tests.fakes.openai_tts import DOCUMENTED_FIELDS
from tests.fixtures_servers import FAKE_OPENAI_KEY, FakeEngineServer
from voicecache import bootstrap
from voicecache.bootstrap import engine_specs
from voicecache.engines import build_engines
from voicecache.engines.emotivoice import EmotiVoiceEngine
from voicecache.engines.openai import OpenAIEngine
from voicecache.engines.resilience import ResilientEngine
from voicecache.errors import EngineError
from voicecache.model import SynthesisJob
from voicecache.settings import Settings

EMOTIVOICE_FIELDS = {"input", "voice", "prompt", "language", "model", "response_format", "speed"}


def _duration(data: bytes) -> float:
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


# -- EmotiVoice --------------------------------------------------------------------------------


async def test_emotivoice_wire_format(fake_emotivoice: FakeEngineServer) -> None:
    engine = EmotiVoiceEngine(url=fake_emotivoice.url)
    try:
        audio = await engine.synthesize(SynthesisJob("你好世界", "8051", "happy", 1.0))
    finally:
        await engine.aclose()
    (body,) = fake_emotivoice.controls.requests
    assert set(body) == EMOTIVOICE_FIELDS
    assert body["input"] == "你好世界" and body["voice"] == "8051"
    assert body["prompt"] == "Happy" and body["response_format"] == "wav"
    assert body["model"] == "emoti-voice" and body["language"] == "zh_us"
    assert audio.sample_rate == 16000
    assert audio.duration == pytest.approx(4 * 0.06, abs=0.01)
    assert engine.calls == 1


async def test_emotivoice_mp3_content_type_is_decoded(fake_emotivoice: FakeEngineServer) -> None:
    # EmotiVoice answers `audio/mp3`, not `audio/mpeg`: the bytes are probed, not the header.
    engine = EmotiVoiceEngine(url=fake_emotivoice.url, upstream_format="mp3")
    try:
        audio = await engine.synthesize(SynthesisJob("hello there", "9017"))
    finally:
        await engine.aclose()
    assert fake_emotivoice.controls.requests[0]["response_format"] == "mp3"
    assert fake_emotivoice.controls.requests[0]["prompt"] == ""
    assert audio.sample_rate == 16000 and audio.duration > 0.5


async def test_emotivoice_speed_is_sent_upstream(fake_emotivoice: FakeEngineServer) -> None:
    engine = EmotiVoiceEngine(url=fake_emotivoice.url)
    try:
        normal = await engine.synthesize(SynthesisJob("twelve chars", "8051"))
        fast = await engine.synthesize(SynthesisJob("twelve chars", "8051", speed=2.0))
    finally:
        await engine.aclose()
    assert [r["speed"] for r in fake_emotivoice.controls.requests] == [1.0, 2.0]
    assert fast.duration == pytest.approx(normal.duration / 2, rel=0.02)


async def test_emotivoice_derive_speed_renders_at_one_and_stretches(
    fake_emotivoice: FakeEngineServer,
) -> None:
    exact = EmotiVoiceEngine(url=fake_emotivoice.url)
    derived = EmotiVoiceEngine(url=fake_emotivoice.url, derive_speed=True)
    job = SynthesisJob("twelve chars", "8051", speed=2.0)
    try:
        audio = await derived.synthesize(job)
    finally:
        await derived.aclose()
        await exact.aclose()
    assert fake_emotivoice.controls.requests[0]["speed"] == 1.0
    assert audio.duration == pytest.approx(12 * 0.06 / 2, rel=0.02)
    assert derived.key_options(job) == exact.key_options(job) | {"derived_speed": True}


async def test_emotivoice_garbage_is_an_engine_error(fake_emotivoice: FakeEngineServer) -> None:
    fake_emotivoice.controls.garbage_next_n = 1
    engine = EmotiVoiceEngine(url=fake_emotivoice.url)
    try:
        with pytest.raises(EngineError) as caught:
            await engine.synthesize(SynthesisJob("hi", "8051"))
    finally:
        await engine.aclose()
    assert type(caught.value) is EngineError and not caught.value.retryable
    assert "not decodable" in caught.value.detail


async def test_emotivoice_unknown_speaker_500_is_retryable(
    fake_emotivoice: FakeEngineServer,
) -> None:
    engine = EmotiVoiceEngine(url=fake_emotivoice.url)
    try:
        with pytest.raises(EngineError) as caught:
            await engine.synthesize(SynthesisJob("hi", "123456"))
    finally:
        await engine.aclose()
    assert caught.value.upstream_status == 500 and caught.value.retryable
    assert "Internal Server Error" in caught.value.detail


def test_emotivoice_voices_and_emotions() -> None:
    engine = EmotiVoiceEngine(url="http://127.0.0.1:9", emotion_prompts={"Tender": "温柔"})
    assert engine.accepts_voice("8051") and engine.accepts_voice("42")
    assert not engine.accepts_voice("alloy")
    assert {"neutral", "happy", "sad", "angry", "surprised", "tender"} <= set(engine.emotions())
    job = SynthesisJob("x", "8051", "tender")
    assert engine.request_body(job)["prompt"] == "温柔"
    listed = EmotiVoiceEngine(url="http://127.0.0.1:9", voices=["8051", "9017"])
    assert [v.id for v in listed.voices()] == ["8051", "9017"]
    assert not listed.accepts_voice("42")


# -- OpenAI-compatible -------------------------------------------------------------------------


def _openai(server: FakeEngineServer, **kwargs: object) -> OpenAIEngine:
    return OpenAIEngine(base_url=server.url, api_key=FAKE_OPENAI_KEY, **kwargs)  # type: ignore[arg-type]


async def test_openai_wire_format(fake_openai: FakeEngineServer) -> None:
    engine = _openai(fake_openai)
    try:
        audio = await engine.synthesize(SynthesisJob("Hello world", "nova", speed=1.25))
        await engine.synthesize(SynthesisJob("Hello world", "nova", instructions="Whisper."))
    finally:
        await engine.aclose()
    plain, instructed = fake_openai.controls.requests
    assert plain == {
        "model": "tts-1",
        "input": "Hello world",
        "voice": "nova",
        "response_format": "wav",
        "speed": 1.25,
    }
    assert instructed["instructions"] == "Whisper."
    assert set(instructed) <= DOCUMENTED_FIELDS
    assert audio.sample_rate == 24000
    assert engine.calls == 2


async def test_openai_flac_and_emotion_instructions(fake_openai: FakeEngineServer) -> None:
    engine = OpenAIEngine(
        base_url=fake_openai.url + "/v1/",  # as OpenAI SDKs spell it
        api_key=FAKE_OPENAI_KEY,
        model="gpt-4o-mini-tts",
        upstream_format="flac",
        emotion_instructions={"happy": "Sound cheerful."},
    )
    job = SynthesisJob("Good news", "coral", "happy", instructions="Slowly.")
    try:
        audio = await engine.synthesize(job)
    finally:
        await engine.aclose()
    (body,) = fake_openai.controls.requests
    assert body["response_format"] == "flac" and body["model"] == "gpt-4o-mini-tts"
    assert body["instructions"] == "Sound cheerful. Slowly."
    assert engine.key_options(job)["instructions"] == "Sound cheerful. Slowly."
    assert audio.sample_rate == 24000
    assert engine.emotions() == ("neutral", "happy")


async def test_openai_wrong_key_is_a_non_retryable_error(fake_openai: FakeEngineServer) -> None:
    engine = OpenAIEngine(base_url=fake_openai.url, api_key="sk-wrong")
    try:
        with pytest.raises(EngineError) as caught:
            await engine.synthesize(SynthesisJob("hi", "alloy"))
    finally:
        await engine.aclose()
    assert caught.value.upstream_status == 401 and not caught.value.retryable
    assert "Incorrect API key" in caught.value.detail


# -- through the app ---------------------------------------------------------------------------


def test_app_selected_by_environment_alone(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    serve: Callable[..., LiveApp],
    fake_emotivoice: FakeEngineServer,
) -> None:
    monkeypatch.setenv("VOICECACHE_ENGINE", "emotivoice")
    monkeypatch.setenv("VOICECACHE_EMOTIVOICE_URL", fake_emotivoice.url)
    monkeypatch.setenv("VOICECACHE_EMOTIVOICE_MODEL_VERSION", "ev-2024-05")
    monkeypatch.setenv("VOICECACHE_DATA_DIR", str(tmp_path))
    live = serve(Settings())
    line = {"text": "今天天气很好", "voice": "8051", "emotion": "sad"}
    first = live.client.post("/tts", json=line)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["content-type"] == "audio/wav"
    assert sf.info(io.BytesIO(first.content)).samplerate == 16000
    second = live.client.post("/tts", json=line)
    assert second.headers["x-cache"] == "HIT" and second.content == first.content
    assert fake_emotivoice.controls.calls == 1 and live.engine_calls("emotivoice") == 1
    assert fake_emotivoice.controls.requests[0]["prompt"] == "Sad"
    health = live.client.get("/healthz").json()
    assert health["default_engine"] == "emotivoice"
    assert health["engines"]["emotivoice"]["model_version"] == "ev-2024-05"


def test_request_picks_engine_by_model_or_engine(
    tmp_path: Path,
    serve: Callable[..., LiveApp],
    fake_emotivoice: FakeEngineServer,
    fake_openai: FakeEngineServer,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        engine="emotivoice",
        emotivoice_url=fake_emotivoice.url,
        openai_base_url=fake_openai.url,
        openai_api_key=FAKE_OPENAI_KEY,
    )
    live = serve(settings)
    by_model = live.client.post(
        "/v1/audio/speech",
        json={"model": "openai", "input": "Hello", "voice": "alloy", "response_format": "flac"},
    )
    assert by_model.status_code == 200, by_model.text
    assert by_model.headers["content-type"] == "audio/flac"
    assert fake_openai.controls.calls == 1 and fake_emotivoice.controls.calls == 0
    # An OpenAI model name that is no engine name means the default engine.
    default = live.client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hello", "voice": "8051"}
    )
    assert default.status_code == 200, default.text
    assert default.headers["content-type"] == "audio/mpeg"
    assert fake_emotivoice.controls.calls == 1
    native = live.client.post("/tts", json={"text": "Hello", "voice": "nova", "engine": "openai"})
    assert native.status_code == 200 and fake_openai.controls.calls == 2
    wrong_voice = live.client.post("/tts", json={"text": "Hello", "voice": "nova"})
    assert wrong_voice.status_code == 422 and "unknown voice" in wrong_voice.json()["detail"]
    keys = {r.headers["x-cache-key"] for r in (by_model, default, native)}
    assert len(keys) == 3


def test_garbage_is_502_and_never_cached(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(
        Settings(data_dir=tmp_path, engine="emotivoice", emotivoice_url=fake_emotivoice.url)
    )
    fake_emotivoice.controls.garbage_next_n = 1
    line = {"text": "garbage in", "voice": "8051"}
    bad = live.client.post("/tts", json=line)
    assert bad.status_code == 502
    assert "not decodable" in bad.json()["detail"]
    good = live.client.post("/tts", json=line)
    assert good.status_code == 200 and good.headers["x-cache"] == "MISS"
    assert fake_emotivoice.controls.calls == 2


async def test_several_engines_from_toml(tmp_path: Path, fake_openai: FakeEngineServer) -> None:
    config = tmp_path / "voicecache.toml"
    config.write_text(
        f"""
engine = "kokoro"
[engines.kokoro]
kind = "openai"
url = "{fake_openai.url}"
api_key = "{FAKE_OPENAI_KEY}"
model = "tts-1-hd"
model_version = "kokoro-v1.0"
options = {{ voices = ["af_bella", "am_adam"], upstream_format = "flac" }}
[engines.ev]
kind = "emotivoice"
url = "http://127.0.0.1:8000"
options = {{ derive_speed = true, emotion_prompts = {{ happy = "开心" }} }}
"""
    )
    engines = build_engines(engine_specs(Settings.load(config)), default="kokoro")
    assert all(isinstance(engines[n], ResilientEngine) for n in ("kokoro", "ev"))
    kokoro, ev = engines["kokoro"].inner, engines["ev"].inner  # type: ignore[attr-defined]
    assert isinstance(kokoro, OpenAIEngine) and isinstance(ev, EmotiVoiceEngine)
    assert kokoro.model_version == "kokoro-v1.0" and kokoro.model == "tts-1-hd"
    assert kokoro.accepts_voice("af_bella") and not kokoro.accepts_voice("alloy")
    assert ev.derive_speed and ev.emotion_prompts["happy"] == "开心"
    assert ev.model_version == "emotivoice-1"
    for engine in engines.values():
        await engine.aclose()


def test_derived_speeds_reuse_the_cached_speed_one_render(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        engine="emotivoice",
        emotivoice_url=fake_emotivoice.url,
        emotivoice_derive_speed=True,
    )
    live = serve(settings)
    line = {"text": "twelve chars", "voice": "8051"}
    fast = live.client.post("/tts", json=line | {"speed": 2.0})
    assert fast.status_code == 200 and fast.headers["x-cache"] == "MISS"
    assert [r["speed"] for r in fake_emotivoice.controls.requests] == [1.0]
    normal = live.client.post("/tts", json=line)
    assert normal.headers["x-cache"] == "HIT"  # the render the fast one was made from
    slow = live.client.post("/tts", json=line | {"speed": 0.5, "format": "flac"})
    assert slow.headers["x-cache"] == "MISS"
    assert fake_emotivoice.controls.calls == 1 and live.engine_calls("emotivoice") == 1
    assert _duration(fast.content) == pytest.approx(_duration(normal.content) / 2, rel=0.02)
    assert _duration(slow.content) == pytest.approx(_duration(normal.content) * 2, rel=0.02)
    assert len({fast.headers["x-cache-key"], normal.headers["x-cache-key"]}) == 2
    again = live.client.post("/tts", json=line | {"speed": 2.0})
    assert again.headers["x-cache"] == "HIT" and again.content == fast.content


def test_openai_client_through_voicecache_to_an_openai_server(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    serve: Callable[..., LiveApp],
    fake_openai: FakeEngineServer,
) -> None:
    from openai import OpenAI

    monkeypatch.setenv("VOICECACHE_ENGINE", "openai")
    monkeypatch.setenv("VOICECACHE_OPENAI_BASE_URL", fake_openai.url + "/v1")
    monkeypatch.setenv("VOICECACHE_OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("VOICECACHE_OPENAI_MODEL", "gpt-4o-mini-tts")
    monkeypatch.setenv("VOICECACHE_DATA_DIR", str(tmp_path))
    live = serve(Settings())
    client = OpenAI(base_url=live.url + "/v1", api_key="unused-by-voicecache")
    kwargs = {"model": "gpt-4o-mini-tts", "voice": "shimmer", "input": "Cached for you."}
    first = client.audio.speech.create(**kwargs, response_format="wav", instructions="Warmly.")
    second = client.audio.speech.create(**kwargs, response_format="wav", instructions="Warmly.")
    assert first.content == second.content and sf.info(io.BytesIO(first.content)).samplerate
    assert fake_openai.controls.calls == 1
    (body,) = fake_openai.controls.requests
    assert body == {
        "model": "gpt-4o-mini-tts",
        "input": "Cached for you.",
        "voice": "shimmer",
        "instructions": "Warmly.",
        "response_format": "wav",
        "speed": 1.0,
    }


def test_engine_without_its_url_is_a_readable_config_error(tmp_path: Path) -> None:
    from voicecache.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        bootstrap.build(Settings(data_dir=tmp_path, engine="emotivoice"))
    assert "set VOICECACHE_EMOTIVOICE_URL" in caught.value.detail
