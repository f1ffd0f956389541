"""Sentence splitting rules, on Chinese, English and Japanese (the README's examples)."""

from __future__ import annotations

import pytest

from voicecache.cache.segments.split import pause_after, split_text
from voicecache.keys import normalize_text


def texts(text: str, **limits: int) -> list[str]:
    """The segments of `text` after standard normalization, as a request's text would be."""
    return [piece.text for piece in split_text(normalize_text(text), **limits)]


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        (
            "Hello there. How are you today? I am fine, thanks! See you soon.",
            ["Hello there.", "How are you today?", "I am fine, thanks!", "See you soon."],
        ),
        (
            "大家好！欢迎来到直播间。今天我们一起玩游戏；记得点赞关注哦！",
            # "大家好!" has 4 characters: it joins the next sentence.
            ["大家好!欢迎来到直播间。", "今天我们一起玩游戏;", "记得点赞关注哦!"],
        ),
        (
            "こんにちは。今日はいい天気ですね！散歩に行きましょうか？",
            ["こんにちは。", "今日はいい天気ですね!", "散歩に行きましょうか?"],
        ),
    ],
    ids=["english", "chinese", "japanese"],
)
def test_sentences_end_at_end_marks(text: str, segments: list[str]) -> None:
    assert texts(text) == segments


def test_a_dot_ends_a_sentence_only_before_white_space_or_the_end() -> None:
    assert texts("Pi is about 3.14 today. Version 2.0.1 ships soon... Then we rest.") == [
        "Pi is about 3.14 today.",
        "Version 2.0.1 ships soon...",
        "Then we rest.",
    ]


def test_closing_quotes_and_repeated_marks_stay_with_their_sentence() -> None:
    assert texts('She asked "Really?!" He said yes. 「はい。」と彼は言った。') == [
        'She asked "Really?!"',
        "He said yes.",
        "「はい。」と彼は言った。",
    ]
    assert texts('He said "Stop." Then he left the room.') == [
        'He said "Stop."',
        "Then he left the room.",
    ]


def test_short_pieces_join_the_next_and_the_last_joins_the_one_before() -> None:
    assert texts("Hi! Welcome to the stream. Thanks for coming. Bye!") == [
        "Hi! Welcome to the stream.",
        "Thanks for coming. Bye!",
    ]
    assert texts("Ok. Go. Now.") == ["Ok. Go. Now."]  # nothing long enough: one piece
    assert texts("First line here. Second line here.", min_chars=40) == [
        "First line here. Second line here."
    ]


def test_line_breaks_end_sentences_when_normalization_keeps_them() -> None:
    text = "第一行没有句号\n第二行也没有\nthird line without a stop"
    pieces = split_text(normalize_text(text, "exact"))
    assert [piece.text for piece in pieces] == [
        "第一行没有句号",
        "第二行也没有",
        "third line without a stop",
    ]
    # Standard normalization folds line breaks into spaces: no end mark, one sentence.
    assert len(split_text(normalize_text(text))) == 1


def test_over_long_sentences_are_cut_at_commas() -> None:
    chinese = "今天的天气非常好，我们一起去公园散步，然后去吃好吃的东西、喝咖啡，最后回家休息。"
    assert texts(chinese, max_chars=20) == [
        "今天的天气非常好,",
        "我们一起去公园散步,",
        "然后去吃好吃的东西、",
        "喝咖啡,最后回家休息。",  # "喝咖啡," is short: it joins the next clause
    ]
    assert texts(chinese) == [normalize_text(chinese)]  # under the limit: whole
    english = "It costs 1,000,000 dollars, which is a lot, and we will pay it anyway."
    pieces = split_text(normalize_text(english), max_chars=30)
    assert [piece.text for piece in pieces] == [
        "It costs 1,000,000 dollars,",  # digits' commas never cut
        "which is a lot,",
        "and we will pay it anyway.",
    ]
    assert [piece.pause for piece in pieces] == ["comma", "comma", "sentence"]
    japanese = "明日は朝早く起きて、駅まで歩いて、電車に乗って、海を見に行きます。"
    assert texts(japanese, max_chars=15) == [
        "明日は朝早く起きて、",
        "駅まで歩いて、",
        "電車に乗って、",
        "海を見に行きます。",
    ]


def test_pieces_cover_the_text_without_losing_a_character() -> None:
    text = normalize_text("A b c d e f. 你好世界，再见！ Short. x, y; z? The end")
    joined = "".join(piece.text for piece in split_text(text, max_chars=8)).replace(" ", "")
    assert joined == text.replace(" ", "")


@pytest.mark.parametrize(
    ("text", "pause"),
    [("Hello.", "sentence"), ("你好。", "sentence"), ('Yes!"', "sentence"), ("hi,", "comma"),
     ("你好、", "comma"), ("Thanks", "none"), ("", "none")],
)  # fmt: skip
def test_pause_after(text: str, pause: str) -> None:
    assert pause_after(text) == pause
