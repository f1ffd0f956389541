"""What a client asks for: `SpeechRequest`, validated and normalized at the edge, and the
limits its fields obey."""

from __future__ import annotations

import re
from collections.abc import (
    Iterable,
)
from dataclasses import dataclass
from typing import Literal

from voicecache.codecs import FORMATS, AudioFormat
from voicecache.errors import InvalidRequest
from voicecache.keys import Normalization, normalize_text

# -- the request --------------------------------------------------------------------------------

MIN_SPEED = 0.25
MAX_SPEED = 4.0
# `\Z`, not `$`: `$` also matches before a trailing newline ("en\n").
VOICE_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]{1,64}\Z")
EMOTION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
ENGINE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
MAX_TAGS = 16
# How a request's text may be cut into cached pieces (`cache/segments/`): `off` is exact.
SegmentMode = Literal["off", "sentence"]
# Raw text may be longer than the limit (normalization collapses white space), but not
# without bound: normalizing is work done before the limit can be checked.
RAW_TEXT_SLACK = 16
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(name: str, value: str) -> None:
    """Refuse strings that are not Unicode text: a lone surrogate (JSON's `\\ud800`, or an
    undecodable byte on the command line) cannot be encoded, hashed or spoken."""
    found = _SURROGATE.search(value)
    if found is not None:
        raise InvalidRequest(
            f"{name} contains a lone surrogate (U+{ord(found.group()):04X} at position "
            f"{found.start()}), which is not text",
            name,
        )


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """A validated, normalized request for speech.

    Built once at the edge (HTTP body, CLI arguments, a warm-up row) by `create`, which
    validates every field and normalizes the text. The engine always synthesizes the
    normalized text, so the audio stored under a key always matches that key."""

    text: str
    voice: str
    emotion: str = "neutral"
    speed: float = 1.0
    format: AudioFormat = "wav"
    engine: str | None = None
    tags: tuple[str, ...] = ()
    personalized: bool = False
    instructions: str | None = None
    segments: SegmentMode | None = None  # None: the engine's or the global setting decides

    @classmethod
    def create(
        cls,
        *,
        text: str,
        voice: str,
        emotion: str | None = None,
        speed: float | None = None,
        format: str | None = None,
        engine: str | None = None,
        tags: Iterable[str] | str | None = None,
        personalized: bool = False,
        instructions: str | None = None,
        segments: SegmentMode | None = None,  # checked at the edge (a Literal field)
        normalization: Normalization = "standard",
        max_text_chars: int = 4000,
    ) -> SpeechRequest:
        """Validate and normalize; raises `InvalidRequest` with a readable detail."""
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string", "text")
        if len(text) > max_text_chars * RAW_TEXT_SLACK:
            raise InvalidRequest(
                f"text is {len(text)} characters; the limit is {max_text_chars}", "text"
            )
        _check_text("text", text)
        # The limit applies to what the engine would speak: NFKC can expand a character up
        # to 18 times (U+FDFA), so the raw length says little.
        normalized = normalize_text(text, normalization)
        if len(normalized) > max_text_chars:
            raise InvalidRequest(
                f"text is {len(normalized)} characters after normalization; the limit is "
                f"{max_text_chars}",
                "text",
            )
        if not normalized.strip():
            raise InvalidRequest("text is empty", "text")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise InvalidRequest("instructions must be a string", "instructions")
            _check_text("instructions", instructions)
        if not isinstance(voice, str) or not VOICE_PATTERN.match(voice):
            raise InvalidRequest(
                "voice must be 1-64 characters of letters, digits, '_', '.', '+' or '-'", "voice"
            )
        emotion = (emotion or "neutral").strip().lower()
        if not EMOTION_PATTERN.match(emotion):
            raise InvalidRequest("emotion must be 1-32 letters, digits, '_' or '-'", "emotion")
        speed = 1.0 if speed is None else speed
        if isinstance(speed, bool) or not isinstance(speed, int | float) or speed != speed:
            raise InvalidRequest("speed must be a number", "speed")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}", "speed")
        fmt = (format or "wav").lower()
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of: {', '.join(FORMATS)}", "format")
        if engine and (not isinstance(engine, str) or not ENGINE_PATTERN.match(engine)):
            raise InvalidRequest("engine must be 1-64 letters, digits, '_', '.' or '-'", "engine")
        return cls(
            text=normalized,
            voice=voice,
            emotion=emotion,
            speed=round(float(speed), 2),
            format=fmt,
            engine=engine or None,
            tags=_parse_tags(tags),
            personalized=bool(personalized),
            instructions=instructions or None,
            segments=segments,
        )


def _parse_tags(tags: Iterable[str] | str | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    cleaned = sorted({str(tag).strip() for tag in items if str(tag).strip()})
    if len(cleaned) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags", "tags")
    for tag in cleaned:
        if not TAG_PATTERN.match(tag):
            raise InvalidRequest(
                f"tag {tag!r} must be 1-64 letters, digits, '_', '.', ':' or '-'", "tags"
            )
    return tuple(cleaned)
