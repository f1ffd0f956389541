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

# Pictographs (emoji and their kin): every engine reads them differently — eSpeak names some
# ("party popper"), neural engines skip them or stumble — and they change a line's key without
# changing its words. `standard` drops them, so every engine speaks the same text under the
# same key. Python's `re` has no `\p{Extended_Pictographic}`, so the class is built once from
# the blocks that hold Unicode's Extended_Pictographic characters, keeping only symbols
# (categories So, Sk, Sm: not the letters, digits and brackets that share some blocks), plus
# the invisible parts of emoji sequences: variation selectors, the keycap mark, tag
# characters (skin tones are Sk, in the 1F3FB block; ZWJ is dropped as zero-width above).
_PICTOGRAPH_BLOCKS = (
    (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328), (0x2388, 0x2388),
    (0x23CF, 0x23CF), (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB),
    (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x27BF), (0x2934, 0x2935),
    (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55), (0x3297, 0x3297),
    (0x3299, 0x3299), (0x1F000, 0x1FAFF),
)  # fmt: skip
_EMOJI_PARTS = ((0xFE0E, 0xFE0F), (0x20E3, 0x20E3), (0xE0020, 0xE007F))


def _character_class(ranges: list[tuple[int, int]]) -> str:
    return "".join(
        re.escape(chr(first)) + ("-" + re.escape(chr(last)) if last > first else "")
        for first, last in ranges
    )


def _pictograph_pattern() -> re.Pattern[str]:
    ranges: list[tuple[int, int]] = list(_EMOJI_PARTS)
    for first, last in _PICTOGRAPH_BLOCKS:
        for code in range(first, last + 1):
            if unicodedata.category(chr(code)) in ("So", "Sk", "Sm"):
                if ranges and ranges[-1][1] == code - 1:
                    ranges[-1] = (ranges[-1][0], code)
                else:
                    ranges.append((code, code))
    return re.compile(f"[{_character_class(ranges)}]")


_PICTOGRAPH = _pictograph_pattern()
# A superset in five ranges, cheap to scan for: most texts (CJK included) have none of it.
_MAYBE_PICTOGRAPH = re.compile(
    "[\u20e3\u2194-\u3299\ufe0e\ufe0f\U0001f000-\U0001faff\U000e0020-\U000e007f]"
)
# A run of pictographs with the white space around it, and the character after the run.
_PICTOGRAPHS = re.compile(
    rf"(\s*){_PICTOGRAPH.pattern}(?:\s*{_PICTOGRAPH.pattern})*(\s*)(?=(.?))", re.DOTALL
)
# After these (or at the end) a dropped run leaves nothing: "Thanks 🎉!" → "Thanks!".
_CLOSING = frozenset(".,!?;:)]}…。、，！？；：）」』\"'")


def _drop_pictograph(match: re.Match[str]) -> str:
    # A run that stood between words as a word of its own ("GG 👍 well played") leaves a
    # space; one inside a word or a CJK sentence, or before punctuation, leaves nothing.
    spaced = match.group(1) or match.group(2)
    return " " if spaced and match.group(3) not in _CLOSING and match.group(3) else ""


def drop_pictographs(text: str) -> str:
    """`text` without emoji and other pictographs (see `_PICTOGRAPH_BLOCKS`)."""
    return _PICTOGRAPHS.sub(_drop_pictograph, text)


def normalize_text(text: str, mode: Normalization = "standard") -> str:
    """Normalize `text` so that texts a listener cannot tell apart share one key.

    `exact` keeps the text as given; `standard` applies NFKC (full-width and half-width forms
    agree), drops zero-width characters and pictographs (emoji), unifies quote and dash
    variants, collapses repeated punctuation and runs of white space, and strips the ends;
    `casefold` also folds case, which is unsafe for acronyms ("US" and "us" are spoken
    differently) and so is opt-in.
    """
    if mode == "exact":
        return text
    text = unicodedata.normalize("NFKC", text.translate(_INVISIBLE))
    if _MAYBE_PICTOGRAPH.search(text) and _PICTOGRAPH.search(text):
        # NFKC again: a dropped emoji may have stood between a letter and its combining mark.
        text = unicodedata.normalize("NFKC", drop_pictographs(text))
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
