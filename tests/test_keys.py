"""Normalization and cache keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecache.errors import InvalidRequest
from voicecache.keys import build_key, normalize_text
from voicecache.model import SpeechRequest

BASE: dict[str, Any] = {
    "text": "Victory is ours!",
    "engine": "espeak",
    "model_version": "espeak-ng-1.52",
    "voice": "en",
    "voice_version": "builtin",
    "emotion": "neutral",
    "speed": 1.0,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("text", "Victory is yours!"),
        ("engine", "emotivoice"),
        ("model_version", "espeak-ng-1.53"),
        ("voice", "en-us"),
        ("voice_version", "abc123"),
        ("emotion", "happy"),
        ("speed", 1.25),
        ("tenant", "acme"),
        ("options", {"instructions": "whisper"}),
    ],
)
def test_every_dimension_changes_the_key(field: str, value: Any) -> None:
    assert build_key(**{**BASE, field: value}).digest != build_key(**BASE).digest


def test_key_is_stable_and_hex() -> None:
    first, second = build_key(**BASE), build_key(**dict(BASE))
    assert first.digest == second.digest
    assert len(first.digest) == 64 and int(first.digest, 16) >= 0
    assert first.variant_id("wav") == f"{first.digest}.wav"


@pytest.mark.parametrize(
    ("mode", "variants"),
    [
        ("standard", ["你好", " 你好 ", "\u3000你好\u3000", "你\u200b好"]),
        ("standard", ["Ｈｅｌｌｏ  world", "Hello world", "Hello\t\nworld "]),
        ("standard", ["It’s “fine”", 'It\'s "fine"']),
        ("standard", ["Wow!!!", "Wow!", "Wow！！"]),
        ("casefold", ["Hello World", "hello world", "HELLO  WORLD"]),
        ("exact", ["same", "same"]),
    ],
)
def test_equivalent_texts_normalize_alike(mode: str, variants: list[str]) -> None:
    normalized = {normalize_text(text, mode) for text in variants}  # type: ignore[arg-type]
    assert len(normalized) == 1


def test_standard_keeps_case_and_exact_keeps_everything() -> None:
    assert normalize_text("US", "standard") != normalize_text("us", "standard")
    assert normalize_text(" a ", "exact") == " a "
    assert normalize_text("Wait...", "standard") == "Wait..."


@given(st.text(max_size=200), st.sampled_from(["exact", "standard", "casefold"]))
def test_normalization_is_idempotent(text: str, mode: str) -> None:
    once = normalize_text(text, mode)  # type: ignore[arg-type]
    assert normalize_text(once, mode) == once  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Thanks 🎉🎉!", "Thanks!"),
        ("GG 👍 well played", "GG well played"),
        ("Hi👋 there", "Hi there"),
        ("🔥🔥 Let's go", "Let's go"),
        ("谢谢你的礼物🎁！", "谢谢你的礼物!"),
        ("你好🎉朋友", "你好朋友"),
        ("👍🏽 skin tones, 👨‍👩‍👧 families", "skin tones, families"),
        ("🇫🇷 flags, 🏴󠁧󠁢󠁳󠁣󠁴󠁿 tags", "flags, tags"),
        ("#️⃣1️⃣ keycaps", "#1 keycaps"),
        ("★ ✓ ❤️ ☀ dingbats", "dingbats"),
        ("© 2024 A → B", "© 2024 A → B"),  # text symbols are not pictographs
        ("Ⓜ line", "M line"),  # NFKC makes letters of enclosed letters first
    ],
)
def test_standard_drops_pictographs(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken
    assert normalize_text(text, "exact") == text


def test_an_emoji_only_line_is_empty() -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        SpeechRequest.create(text="🎉🎉🎉", voice="en")


_EMOJI_AND_FRIENDS = st.sampled_from(
    [*"🎉👍🏽\u200d❤\ufe0f\u20e3🇫🇷\U000e0067 !.e\u0301你好", "\u3000", "\t"]
)


@given(st.lists(_EMOJI_AND_FRIENDS, max_size=40).map("".join), st.sampled_from(["standard"]))
def test_dropping_pictographs_is_idempotent(text: str, mode: str) -> None:
    once = normalize_text(text, mode)  # type: ignore[arg-type]
    assert normalize_text(once, mode) == once  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "empty"),
        ({"text": "  \u200b "}, "empty"),
        ({"text": "x" * 4001}, "limit is 4000"),
        ({"voice": "../etc"}, "voice"),
        ({"voice": ""}, "voice"),
        ({"speed": 0.1}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"speed": True}, "speed"),
        ({"format": "aiff"}, "format"),
        ({"emotion": "very happy!"}, "emotion"),
        ({"tags": ["ok", "bad tag"]}, "tag"),
    ],
)
def test_invalid_requests_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"text": "hello", "voice": "en", **kwargs}
    with pytest.raises(InvalidRequest, match=message):
        SpeechRequest.create(**arguments)


def test_create_normalizes_and_rounds() -> None:
    request = SpeechRequest.create(
        text=" Hi  there ", voice="en", speed=1.234, format="MP3", tags="b,a,a", emotion="Happy"
    )
    assert request.text == "Hi there"
    assert request.speed == 1.23
    assert request.format == "mp3"
    assert request.tags == ("a", "b")
    assert request.emotion == "happy"
