"""Emoji are dropped by `standard` normalization, the same for every engine and voice: an
engine never sees them, and a line with emoji shares its audio with the line without."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import LiveApp
from tests.fixtures_servers import FakeEngineServer
from voicecache.settings import Settings


def test_every_engine_gets_the_text_without_emoji_under_one_key(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(Settings(data_dir=tmp_path, emotivoice_url=fake_emotivoice.url))
    for engine, voice in (("espeak", "en"), ("espeak", "cmn"), ("emotivoice", "8051")):
        line = {"voice": voice, "engine": engine}
        first = live.client.post("/tts", json={"text": "谢谢你的礼物🎁🎉！", **line})
        plain = live.client.post("/tts", json={"text": "谢谢你的礼物!", **line})
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        assert plain.headers["x-cache"] == "HIT", (engine, voice)
        assert plain.headers["x-cache-key"] == first.headers["x-cache-key"]
    assert [r["input"] for r in fake_emotivoice.controls.requests] == ["谢谢你的礼物!"]
    assert live.engine_calls("espeak") == 2  # one per voice, never one per spelling
    only_emoji = live.client.post("/tts", json={"text": "🎉🎉", "voice": "en"})
    assert only_emoji.status_code == 422 and only_emoji.json() == {"detail": "text is empty"}


def test_exact_normalization_keeps_emoji(serve: Callable[..., LiveApp], settings: Settings) -> None:
    live = serve(settings.model_copy(update={"normalization": "exact"}))
    with_emoji = live.client.post("/tts", json={"text": "Thanks 🎉", "voice": "en"})
    without = live.client.post("/tts", json={"text": "Thanks", "voice": "en"})
    assert with_emoji.status_code == without.status_code == 200
    assert with_emoji.headers["x-cache-key"] != without.headers["x-cache-key"]
