"""Text normalization and the cache key that names a line's audio.

`normalize_text` makes texts a listener cannot tell apart equal; `build_key` hashes every field
that changes the audio (SHA-256 over canonical JSON) into a `CacheKey`. The output format is
deliberately not in it: audio is stored once in a canonical codec and other formats are
variants of the same key (`variant_id`). The request these are built from is
`model.SpeechRequest`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from voicecache.codecs import AudioFormat

KEY_SCHEMA = 1

# How much of the text's spelling is ignored (see `normalize_text`).
Normalization = Literal["exact", "standard", "casefold"]

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
