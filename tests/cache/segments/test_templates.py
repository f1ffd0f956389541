"""Template patterns: compiled once, matched against normalized texts into fixed parts and slots."""

from __future__ import annotations

import pytest

from voicecache.cache.segments.split import Piece
from voicecache.cache.segments.templates import Template, match_any
from voicecache.errors import ConfigError
from voicecache.keys import normalize_text

WHO = {"voice": "cmn", "engine": "espeak", "emotion": "neutral"}


def parts(template: Template, text: str, **who: str) -> list[Piece] | None:
    return template.match(normalize_text(text), **{**WHO, **who})


def test_fixed_parts_and_a_slot() -> None:
    welcome = Template.compile("欢迎{name}来到直播间！")  # full-width "！" normalized to "!"
    assert parts(welcome, "欢迎小明来到直播间！") == [
        Piece("欢迎", "none", "fixed"),
        Piece("小明", "none", "slot"),
        Piece("来到直播间!", "sentence", "fixed"),
    ]
    assert parts(welcome, "欢迎小明来到我的直播间！") is None
    # Template parts are never merged, however short: "欢迎" has two characters.
    assert [piece.text for piece in parts(welcome, "欢迎 阿狸 来到直播间!") or []] == [
        "欢迎",
        "阿狸",
        "来到直播间!",
    ]


def test_a_slot_matches_1_to_32_characters() -> None:
    hello = Template.compile("Hello {name}, welcome aboard!")
    assert parts(hello, "Hello " + "x" * 32 + ", welcome aboard!") is not None
    assert parts(hello, "Hello " + "x" * 33 + ", welcome aboard!") is None
    assert parts(hello, "Hello , welcome aboard!") is None  # a slot with nothing to say


def test_punctuation_next_to_a_slot_is_a_pause_not_a_part() -> None:
    thanks = Template.compile("Thanks {name}, enjoy the show!")
    assert parts(thanks, "Thanks Bob the Builder, enjoy the show!") == [
        Piece("Thanks", "none", "fixed"),
        Piece("Bob the Builder", "comma", "slot"),
        Piece("enjoy the show!", "sentence", "fixed"),
    ]


def test_several_slots_and_conditions() -> None:
    gift = Template.compile("感谢{user}送的{gift}！", voice="cmn", emotion="happy")
    assert parts(gift, "感谢小明送的火箭！") is None  # emotion neutral
    found = parts(gift, "感谢小明送的火箭！", emotion="happy")
    # The closing "!" has nothing to say: it is the sentence pause after the last slot.
    assert found == [
        Piece("感谢", "none", "fixed"),
        Piece("小明", "none", "slot"),
        Piece("送的", "none", "fixed"),
        Piece("火箭", "sentence", "slot"),
    ]
    engine_bound = Template.compile("Go {team}, go!", engine="openai")
    assert parts(engine_bound, "Go Tigers, go!") is None
    assert parts(engine_bound, "Go Tigers, go!", engine="openai") is not None


def test_the_first_matching_template_wins() -> None:
    first = Template.compile("欢迎{name}来到直播间！", voice="other")
    second = Template.compile("欢迎{name}来到直播间！")
    found = match_any((first, second), normalize_text("欢迎小明来到直播间！"), **WHO)
    assert found is not None and found[1] == Piece("小明", "none", "slot")
    assert match_any((first,), normalize_text("欢迎小明来到直播间！"), **WHO) is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("no slots at all", "no {slot}"),
        ("{first}{last} joined", "two slots touch"),
        ("{first} {last} joined", "two slots touch"),
        ("{name} and {name}", "appears twice"),
        ("{name}!", "no fixed words"),
        ("hi {na-me}", "no {slot}"),
        ("hi {name} and {", "brace"),
    ],
)
def test_patterns_that_cannot_work_are_config_errors(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="template") as raised:
        Template.compile(pattern)
    assert reason in str(raised.value)
