"""Segments and templates end to end: the real app over loopback, real engines (eSpeak, the
fake EmotiVoice server that counts the calls it gets, a tone plugin), real HTTP."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tests.cache.test_policy import Clock
from tests.conftest import LiveApp
from tests.fakes import tone
from tests.fixtures_servers import FakeEngineServer
from voicecache.bootstrap import build
from voicecache.engines import REGISTRY
from voicecache.keys import build_key, normalize_text
from voicecache.model import SynthesisJob
from voicecache.settings import EngineConfig, Settings

SENTENCES = [
    "The sun rises over the quiet harbor.",
    "Fishing boats leave before the first light.",
    "Gulls follow them far out to sea.",
    "By noon the market is full of voices.",
    "Children race along the old stone pier.",
    "At dusk the lighthouse begins to turn.",
]
NEW = "A storm is coming in from the west."


def text_of(sentences: list[str]) -> str:
    return " ".join(sentences)


def emotivoice_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "engine": "emotivoice",
        "emotivoice_url": url,
        "default_voice": "8051",
        "engine_retries": 1,
        "breaker_failures": 100,
        **overrides,
    }
    return Settings(**values)


def inputs(fake: FakeEngineServer) -> list[str]:
    """The texts the fake engine was asked to speak, in order."""
    return [body["input"] for body in fake.controls.requests]


def say(live: LiveApp, text: str, **fields: Any) -> Any:
    response = live.client.post("/tts", json={"text": text, **fields})
    assert response.status_code == 200, response.text
    return response


# -- reuse --------------------------------------------------------------------------------------


def test_two_texts_sharing_five_sentences_cost_one_engine_call(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(emotivoice_settings(tmp_path, fake_emotivoice.url, segments="sentence"))
    first = say(live, text_of(SENTENCES))
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["x-cache-segments"] == "0/6"
    assert sorted(inputs(fake_emotivoice)) == sorted(SENTENCES)  # one call per sentence

    second_text = text_of([*SENTENCES[:3], NEW, *SENTENCES[4:]])  # the fourth one changed
    second = say(live, second_text)
    assert second.headers["x-cache"] == "PARTIAL"
    assert second.headers["x-cache-segments"] == "5/6"
    assert inputs(fake_emotivoice)[6:] == [NEW]  # exactly one more call, for the new one

    # Each sentence asked alone is a hit: a segment is the entry of its text alone.
    for sentence in [*SENTENCES, NEW]:
        alone = say(live, sentence)
        assert alone.headers["x-cache"] == "HIT", sentence
        assert "x-cache-segments" not in alone.headers
    # The whole is a plain hit the second time (stored under its own key).
    again = say(live, second_text)
    assert again.headers["x-cache"] == "HIT"
    assert "x-cache-segments" not in again.headers
    assert again.headers["x-cache-key"] == second.headers["x-cache-key"]
    assert again.content == second.content
    assert fake_emotivoice.controls.calls == 7

    metrics = live.client.get("/metrics").text
    assert 'voicecache_segments_total{result="miss"} 7.0' in metrics
    assert 'voicecache_segments_total{result="hit"} 5.0' in metrics
    # Characters per segment: the engine spoke 7 sentences; the cache served 5 inside the
    # second text, then 7 alone, then the second text whole.
    engine_chars = sum(map(len, [*SENTENCES, NEW]))
    cache_chars = sum(map(len, SENTENCES)) - len(SENTENCES[3]) + engine_chars + len(second_text)
    assert f'voicecache_characters_total{{source="engine"}} {float(engine_chars)}' in metrics
    assert f'voicecache_characters_total{{source="cache"}} {float(cache_chars)}' in metrics


def test_a_sentence_asked_alone_first_is_reused_inside_a_long_text(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(emotivoice_settings(tmp_path, fake_emotivoice.url, segments="sentence"))
    say(live, SENTENCES[2])
    whole = say(live, text_of(SENTENCES), format="mp3")
    assert whole.headers["x-cache"] == "PARTIAL"
    assert whole.headers["x-cache-segments"] == "1/6"
    assert whole.headers["content-type"] == "audio/mpeg"
    assert fake_emotivoice.controls.calls == 6
    assert sf.info(io.BytesIO(whole.content)).duration > 5 * 0.12  # six sentences and pauses


def test_off_by_default_one_call_with_the_whole_text(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(emotivoice_settings(tmp_path, fake_emotivoice.url))
    response = say(live, text_of(SENTENCES))
    assert response.headers["x-cache"] == "MISS"
    assert "x-cache-segments" not in response.headers
    assert inputs(fake_emotivoice) == [text_of(SENTENCES)]


@pytest.mark.parametrize("how", ["request", "engine", "openai-extension"])
def test_segments_switch_on_per_request_or_per_engine(
    serve: Callable[..., LiveApp],
    tmp_path: Path,
    fake_emotivoice: FakeEngineServer,
    how: str,
) -> None:
    overrides: dict[str, Any] = {}
    if how == "engine":
        overrides["engines"] = {
            "emotivoice": EngineConfig(
                kind="emotivoice", url=fake_emotivoice.url, retries=1, segments="sentence"
            )
        }
    live = serve(emotivoice_settings(tmp_path, fake_emotivoice.url, **overrides))
    text = text_of(SENTENCES[:3])
    if how == "openai-extension":
        body = {"model": "emotivoice", "input": text, "voice": "8051", "segments": "sentence"}
        response = live.client.post("/v1/audio/speech", json=body)
    else:
        response = live.client.post(
            "/tts", json={"text": text, **({"segments": "sentence"} if how == "request" else {})}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-cache-segments"] == "0/3"
    assert sorted(inputs(fake_emotivoice)) == sorted(SENTENCES[:3])


def test_a_request_may_turn_segments_off(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(emotivoice_settings(tmp_path, fake_emotivoice.url, segments="sentence"))
    response = say(live, text_of(SENTENCES[:3]), segments="off")
    assert "x-cache-segments" not in response.headers
    assert inputs(fake_emotivoice) == [text_of(SENTENCES[:3])]
    bad = live.client.post("/tts", json={"text": "Hello there.", "segments": "words"})
    assert bad.status_code == 422 and "detail" in bad.json()


def test_mixed_language_text_with_espeak(serve: Callable[..., LiveApp], tmp_path: Path) -> None:
    live = serve(Settings(data_dir=tmp_path / "data", segments="sentence"))
    parts = ["Welcome to the stream, everyone!", "欢迎大家来到直播间。", "今日はいい天気ですね。"]
    text = " ".join(parts)
    first = say(live, text, voice="cmn")
    assert first.headers["x-cache"] == "MISS" and first.headers["x-cache-segments"] == "0/3"
    assert live.engine_calls() == 3
    durations = []
    for part in parts:
        alone = say(live, part, voice="cmn")
        assert alone.headers["x-cache"] == "HIT", part
        durations.append(sf.info(io.BytesIO(alone.content)).duration)
    joined = sf.info(io.BytesIO(first.content)).duration
    # All three renders, their inner edge silences trimmed and two sentence pauses between.
    expected = sum(durations) + 2 * 0.12
    assert abs(joined - expected) <= 0.15 * expected
    assert say(live, text, voice="cmn").headers["x-cache"] == "HIT"
    assert live.engine_calls() == 3


# -- templates ----------------------------------------------------------------------------------

NAMES = ["小明", "小红", "阿狸", "大白", "星星", "小鱼", "团子", "可乐", "月亮", "花花"]


def test_a_template_with_ten_names_pays_for_the_fixed_parts_once(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    settings = emotivoice_settings(
        tmp_path, fake_emotivoice.url, templates=[{"pattern": "欢迎{name}来到直播间！"}]
    )
    live = serve(settings)  # segments are off: templates apply on their own
    for index, name in enumerate(NAMES):
        response = say(live, f"欢迎{name}来到直播间！")
        assert response.headers["x-cache-segments"] == ("0/3" if index == 0 else "2/3")
        assert response.headers["x-cache"] == ("MISS" if index == 0 else "PARTIAL")
        assert response.headers["cache-control"] == "no-store"  # personalized: never whole
    asked = inputs(fake_emotivoice)
    assert sorted(asked[:3]) == sorted(["欢迎", NAMES[0], "来到直播间!"])
    assert asked[3:] == NAMES[1:]  # then only the names

    again = say(live, f"欢迎{NAMES[4]}来到直播间！")
    assert again.headers["x-cache"] == "HIT" and again.headers["x-cache-segments"] == "3/3"
    assert fake_emotivoice.controls.calls == 12
    off = say(live, f"欢迎{NAMES[4]}来到直播间！", segments="off")
    assert "x-cache-segments" not in off.headers and fake_emotivoice.controls.calls == 13


# -- failures -----------------------------------------------------------------------------------


def whole_key(live: LiveApp, text: str) -> str:
    engine = live.gateway.engines["emotivoice"]
    job = SynthesisJob(text=normalize_text(text), voice="8051")
    return build_key(
        text=job.text,
        engine="emotivoice",
        model_version=engine.model_version,
        voice="8051",
        voice_version="builtin",
        emotion="neutral",
        speed=1.0,
        options=engine.key_options(job),
    ).digest


def test_a_failed_segment_fails_the_request_and_stores_no_whole(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    settings = emotivoice_settings(
        tmp_path, fake_emotivoice.url, segments="sentence", default_ttl=60
    )
    clock = Clock()
    live = serve(settings, services=build(settings, clock=clock))
    say(live, text_of(SENTENCES))
    clock.advance(120)  # every sentence expired: stale, within the grace period
    fake_emotivoice.controls.update(fail_next_n=100, status_code=500)

    text = text_of([*SENTENCES[:2], NEW, *SENTENCES[2:5]])
    failed = live.client.post("/tts", json={"text": text})
    assert failed.status_code == 502
    detail = failed.json()["detail"]
    assert "segment 3 of 6" in detail and NEW in detail
    key = whole_key(live, text)
    assert live.client.get(f"/v1/audio/{key}.wav").status_code == 404
    assert live.client.get(f"/v1/audio/{key}.flac").status_code == 404

    # Only the new sentence failed: the others had stale copies to fall back on.
    metrics = live.client.get("/metrics").text
    assert 'voicecache_segments_total{result="error"} 1.0' in metrics

    fake_emotivoice.controls.update(fail_next_n=0)
    recovered = say(live, text)
    assert recovered.headers["x-cache-key"] == key
    assert recovered.headers["x-cache-segments"] == "0/6"  # assembled, not a stored whole
    assert live.client.get(f"/v1/audio/{key}.wav").status_code == 200


# -- the listening proxy ------------------------------------------------------------------------


@pytest.fixture
def tone_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    site = tmp_path / "site"
    tone.install(site)
    monkeypatch.syspath_prepend(site)
    REGISTRY.reload()
    yield
    REGISTRY.reload()
    sys.modules.pop("voicecache_tone", None)


def samples_of(data: bytes) -> npt.NDArray[np.float64]:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == tone.SAMPLE_RATE
    return np.asarray(samples, dtype=np.float64)


def loud_span(samples: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """From the first to the last sample that is not silence."""
    loud = np.flatnonzero(np.abs(samples) > 1)
    return samples[loud[0] : loud[-1] + 1]


def test_joins_are_smooth_on_a_phase_continuous_tone(
    tone_plugin: None, serve: Callable[..., LiveApp], tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        engine="tone",
        engines={"tone": EngineConfig(kind="tone")},
        default_voice="tone",
        segments="sentence",
    )
    live = serve(settings)
    whole = samples_of(say(live, text_of(SENTENCES)).content)
    renders = [samples_of(say(live, sentence).content) for sentence in SENTENCES]
    assert live.engine_calls("tone") == 6  # the sentences alone were hits

    voiced = [loud_span(render) for render in renders]
    inner_step = max(np.abs(np.diff(part)).max() for part in voiced)
    joined = loud_span(whole)
    assert np.abs(np.diff(joined)).max() <= 1.25 * inner_step
    # The proxy can fail: the same renders laid end to end with the pauses, unfaded, click.
    pause = np.zeros(round(settings.segment_pause * tone.SAMPLE_RATE))
    hard = np.concatenate([x for part in voiced for x in (part, pause)][:-1])
    assert np.abs(np.diff(hard)).max() > 1.25 * inner_step

    expected = sum(len(part) for part in voiced) + 5 * len(pause)
    assert abs(len(joined) - expected) <= 0.15 * expected
    lead = round(tone.LEAD * tone.SAMPLE_RATE)
    assert len(whole) == pytest.approx(len(joined) + 2 * lead, abs=0.01 * len(whole))
