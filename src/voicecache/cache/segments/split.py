"""Sentence splitting: where a normalized text may be cut into separately cached segments.

The rules (the README's "Segments and templates" shows them on Chinese, English and Japanese):

1. A sentence ends after `。！？；!?;`, after a `.` followed by white space or the end of the
   text (closing quotes in between allowed: `"Yes." Ok.`), and at a line break. Closing
   quotes and brackets and further end marks that follow stay with the sentence
   (`"Really?!"`, `「はい。」`).
2. A sentence longer than `max_chars` is cut after its commas: `，`, `、`, and `,` unless it
   stands between two digits (so `1,000` stays whole; normalization turns `，` into `,`).
3. A piece shorter than `min_chars` (punctuation counted, surrounding white space not)
   joins the piece after it; the last piece joins the one before it. A piece with nothing to
   say (no letter or digit) counts as empty.

Cuts fall only at sentence ends and, in long sentences, at commas: engines phrase each piece
as a whole utterance, so cutting inside a clause would sound like concatenated words.

Each `Piece` remembers what ended it (`pause`), which sets the silence the joiner leaves
after it: a sentence pause, a shorter comma pause, or none (template parts, `templates.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

# After normalization (NFKC) the full-width `！？；，` are ASCII; `。` and `、` stay as they are.
SENTENCE_ENDS = frozenset("。！？；!?;")
COMMAS = frozenset("，、")  # and "," unless between two digits
# Marks that close what a sentence end is inside of: they stay with that sentence.
CLOSERS = frozenset("\"'”’」』）)]】》〉")
LINE_BREAKS = frozenset("\n\r\u2028\u2029")

# What ends a piece: a sentence, a comma, or nothing (a template's fixed part meets a slot).
Pause = Literal["sentence", "comma", "none"]
# Where a piece comes from: sentence splitting, or a template's fixed part or slot value.
Kind = Literal["sentence", "fixed", "slot"]


@dataclass(frozen=True, slots=True)
class Piece:
    """One segment of a text: what to say, what ends it, and where it comes from."""

    text: str
    pause: Pause = "sentence"
    kind: Kind = "sentence"


def speakable(text: str) -> bool:
    """Whether `text` has anything to say (a letter or a digit, in any script)."""
    return any(char.isalnum() for char in text)


def pause_after(text: str) -> Pause:
    """The pause a piece ending like `text` calls for."""
    stripped = text.rstrip()
    while stripped and stripped[-1] in CLOSERS:
        stripped = stripped[:-1]
    if not stripped:
        return "none"
    last = stripped[-1]
    if last in SENTENCE_ENDS or last == "." or last in LINE_BREAKS:
        return "sentence"
    if last in COMMAS or last == ",":
        return "comma"
    return "none"


def split_text(text: str, *, min_chars: int = 6, max_chars: int = 150) -> list[Piece]:
    """Cut `text` into pieces by the module's rules; one piece when there is nothing to cut."""
    spans: list[tuple[int, int, Pause]] = []
    for start, end in _sentences(text):
        if end - start > max_chars:
            spans.extend(_clauses(text, start, end))
        else:
            spans.append((start, end, "sentence"))
    merged = _merge_short(text, spans, min_chars)
    pieces = [Piece(text[start:end].strip(), pause) for start, end, pause in merged]
    return [piece for piece in pieces if piece.text] or [Piece(text.strip())]


def _sentences(text: str) -> Iterator[tuple[int, int]]:
    start, index, size = 0, 0, len(text)
    while index < size:
        char = text[index]
        ends = (
            char in SENTENCE_ENDS
            or char in LINE_BREAKS
            or (char == "." and _full_stop(text, index))
        )
        if not ends:
            index += 1
            continue
        end = index + 1
        while end < size and (text[end] in SENTENCE_ENDS or text[end] in CLOSERS):
            end += 1
        yield start, end
        start = index = end
    if start < size:
        yield start, size


def _full_stop(text: str, index: int) -> bool:
    """Whether the `.` at `index` ends a sentence: white space or the end after it, past any
    closing quotes (not `3.14`, `e.g.x`, or the first dots of `...`)."""
    after = index + 1
    while after < len(text) and text[after] in CLOSERS:
        after += 1
    return after == len(text) or text[after].isspace()


def _clauses(text: str, start: int, end: int) -> Iterator[tuple[int, int, Pause]]:
    """An over-long sentence cut after its commas."""
    begin = start
    for index in range(start, end - 1):
        char = text[index]
        if char in COMMAS or (char == "," and not _between_digits(text, index)):
            yield begin, index + 1, "comma"
            begin = index + 1
    yield begin, end, "sentence"


def _between_digits(text: str, index: int) -> bool:
    return 0 < index < len(text) - 1 and text[index - 1].isdigit() and text[index + 1].isdigit()


def _length(text: str, start: int, end: int) -> int:
    piece = text[start:end].strip()
    return len(piece) if speakable(piece) else 0


def _merge_short(
    text: str, spans: list[tuple[int, int, Pause]], min_chars: int
) -> list[tuple[int, int, Pause]]:
    """Short pieces join the next piece (the last one joins the one before it)."""
    merged: list[tuple[int, int, Pause]] = []
    pending: int | None = None  # start of short pieces waiting for the next one
    for start, end, pause in spans:
        if pending is not None:
            start, pending = pending, None
        if _length(text, start, end) < min_chars:
            pending = start
            continue
        merged.append((start, end, pause))
    if pending is not None:
        _, last_end, last_pause = spans[-1]
        if merged:
            merged[-1] = (merged[-1][0], last_end, last_pause)
        else:
            merged.append((pending, last_end, last_pause))
    return merged
