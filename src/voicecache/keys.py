"""What a client asks for, normalized, and the cache key that names its audio.

A `SpeechRequest` is built once at the edge (HTTP body, CLI arguments, a warm-up row) by
`SpeechRequest.create`, which validates every field and normalizes the text. The engine always
synthesizes the normalized text, so the audio stored under a key always matches that key.

The key is SHA-256 over canonical JSON of every field that changes the audio. The output format
is deliberately not in it: audio is stored once in a canonical codec and other formats are
variants of the same key (`variant_id`).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecache.codecs import FORMATS, AudioFormat
from voicecache.errors import InvalidRequest
from voicecache.settings import Normalization

KEY_SCHEMA = 1
MIN_SPEED = 0.25
MAX_SPEED = 4.0
VOICE_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
EMOTION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_TAGS = 16

# Characters that render as nothing but make two texts differ byte for byte.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
# Typographic variants of the same punctuation, after NFKC (which leaves these alone).
_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\uff5e": "~",
        "\u301c": "~",
    }
)
# A run of the same mark says no more to a TTS engine than one of it ("!!!" → "!");
# three or more dots stay an ellipsis, because a pause is audible.
_REPEATED_MARK = re.compile(r"([!?,;:。、，！？~])\1+")
_DOTS = re.compile(r"\.{3,}")
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str, mode: Normalization = "standard") -> str:
    """Normalize `text` so that texts a listener cannot tell apart share one key.

    `exact` keeps the text as given; `standard` applies NFKC (full-width and half-width forms
    agree), drops zero-width characters, unifies quote and dash variants, collapses repeated
    punctuation and runs of white space, and strips the ends; `casefold` also folds case, which
    is unsafe for acronyms ("US" and "us" are spoken differently) and so is opt-in.
    """
    if mode == "exact":
        return text
    text = unicodedata.normalize("NFKC", text.translate(_INVISIBLE))
    text = text.translate(_PUNCTUATION)
    text = _DOTS.sub("...", _REPEATED_MARK.sub(r"\1", text))
    text = _WHITESPACE.sub(" ", text).strip()
    if mode == "casefold":
        text = unicodedata.normalize("NFKC", text.casefold())
    return text


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The identity of one synthesized audio: `digest` names it in every tier."""

    digest: str
    fields: Mapping[str, Any]

    def variant_id(self, fmt: AudioFormat) -> str:
        """The storage id of this audio encoded as `fmt`."""
        return f"{self.digest}.{fmt}"


def build_key(
    *,
    text: str,
    engine: str,
    model_version: str,
    voice: str,
    voice_version: str,
    emotion: str,
    speed: float,
    tenant: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> CacheKey:
    """Hash every field that changes the audio into a `CacheKey`."""
    fields: dict[str, Any] = {
        "schema": KEY_SCHEMA,
        "engine": engine,
        "model_version": model_version,
        "voice": voice,
        "voice_version": voice_version,
        "emotion": emotion,
        "speed": speed,
        "text": text,
        "options": dict(options or {}),
    }
    if tenant is not None:
        # Only private voices carry a tenant: public audio is shared across tenants.
        fields["tenant"] = tenant
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return CacheKey(hashlib.sha256(canonical.encode()).hexdigest(), fields)


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """A validated, normalized request for speech."""

    text: str
    voice: str
    emotion: str = "neutral"
    speed: float = 1.0
    format: AudioFormat = "wav"
    engine: str | None = None
    tags: tuple[str, ...] = ()
    personalized: bool = False
    instructions: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

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
        normalization: Normalization = "standard",
        max_text_chars: int = 4000,
    ) -> SpeechRequest:
        """Validate and normalize; raises `InvalidRequest` with a readable detail."""
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string")
        if len(text) > max_text_chars:
            raise InvalidRequest(f"text is {len(text)} characters; the limit is {max_text_chars}")
        normalized = normalize_text(text, normalization)
        if not normalized.strip():
            raise InvalidRequest("text is empty")
        if not isinstance(voice, str) or not VOICE_PATTERN.match(voice):
            raise InvalidRequest(
                "voice must be 1-64 characters of letters, digits, '_', '.', '+' or '-'"
            )
        emotion = (emotion or "neutral").strip().lower()
        if not EMOTION_PATTERN.match(emotion):
            raise InvalidRequest("emotion must be 1-32 letters, digits, '_' or '-'")
        speed = 1.0 if speed is None else speed
        if isinstance(speed, bool) or not isinstance(speed, int | float) or speed != speed:
            raise InvalidRequest("speed must be a number")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
        fmt = (format or "wav").lower()
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of: {', '.join(FORMATS)}")
        return cls(
            text=normalized,
            voice=voice,
            emotion=emotion,
            speed=round(float(speed), 2),
            format=fmt,  # type: ignore[arg-type]
            engine=engine or None,
            tags=_parse_tags(tags),
            personalized=bool(personalized),
            instructions=instructions or None,
        )


def _parse_tags(tags: Iterable[str] | str | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    cleaned = sorted({str(tag).strip() for tag in items if str(tag).strip()})
    if len(cleaned) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags")
    for tag in cleaned:
        if not TAG_PATTERN.match(tag):
            raise InvalidRequest(f"tag {tag!r} must be 1-64 letters, digits, '_', '.', ':' or '-'")
    return tuple(cleaned)
