"""Templates: personalized lines made of fixed parts, cached once for everyone, and slots.

```toml
[[templates]]
pattern = "欢迎{name}来到直播间！"
voice = "cmn"          # optional conditions: voice, engine, emotion
```

A request whose normalized text matches a pattern (and its conditions) is spoken as its parts:
the fixed parts (`欢迎`, `来到直播间!`) are ordinary cached segments shared by every request,
and each slot's value (`小明`) is synthesized on its own as a personalized line. A slot is
`{name}` (letters, digits, `_`) and matches 1-32 characters. Parts are never merged with each
other, whatever their length. Punctuation between a slot and a fixed part (`{name}, …`) is
not spoken on its own: it sets the pause at that join.

Patterns are normalized exactly like request texts (`keys.normalize_text`), so a full-width
`！` in a pattern matches the `!` a normalized text has. A pattern that cannot work (no slot,
two slots side by side, the same slot twice, nothing fixed to cache) is a `ConfigError` at
start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from voicecache.cache.segments.split import Piece, pause_after, speakable
from voicecache.errors import ConfigError
from voicecache.keys import Normalization, normalize_text

SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_SLOT_CHARS = 32


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled `[[templates]]` entry; build it with `compile`."""

    pattern: str
    regex: re.Pattern[str]
    parts: tuple[tuple[str, bool], ...]  # (fixed text, False) or (slot name, True), in order
    voice: str | None = None
    engine: str | None = None
    emotion: str | None = None

    @classmethod
    def compile(
        cls,
        pattern: str,
        *,
        normalization: Normalization = "standard",
        voice: str | None = None,
        engine: str | None = None,
        emotion: str | None = None,
    ) -> Template:
        """Parse and check `pattern`; raises `ConfigError` naming what is wrong."""
        normalized = normalize_text(pattern, normalization)
        pieces = SLOT.split(normalized)
        fixed, names = pieces[0::2], pieces[1::2]
        problem = None
        if not names:
            problem = "it has no {slot}"
        elif len(set(names)) != len(names):
            problem = "a slot name appears twice"
        elif any(not text.strip() for text in fixed[1:-1]):
            problem = "two slots touch: nothing tells where one ends"
        elif any("{" in text or "}" in text for text in fixed):
            problem = "a brace is not part of a {slot} (names: letters, digits, '_')"
        elif not any(speakable(text) for text in fixed):
            problem = "it has no fixed words to cache"
        if problem is not None:
            raise ConfigError(f"template {pattern!r}: {problem}")
        regex = "".join(
            re.escape(text) if index % 2 == 0 else f"(?P<{text}>.{{1,{MAX_SLOT_CHARS}}})"
            for index, text in enumerate(pieces)
        )
        parts = tuple((text, index % 2 == 1) for index, text in enumerate(pieces) if text)
        return cls(pattern, re.compile(regex), parts, voice, engine, emotion)

    def match(self, text: str, *, voice: str, engine: str, emotion: str) -> list[Piece] | None:
        """The parts of `text` when it matches (conditions included), else None."""
        if (
            (self.voice is not None and voice != self.voice)
            or (self.engine is not None and engine != self.engine)
            or (self.emotion is not None and emotion != self.emotion)
        ):
            return None
        found = self.regex.fullmatch(text)
        if found is None:
            return None
        pieces: list[Piece] = []
        for value, is_slot in self.parts:
            if is_slot:
                spoken = found.group(value).strip()
                if not speakable(spoken):
                    return None  # nothing to say in the slot: not this template's line
                pieces.append(Piece(spoken, pause_after(spoken), "slot"))
                continue
            lead = _leading_marks(value)
            if pieces and lead:
                # `{name}, …`: the comma is heard as the pause after the slot, not spoken.
                pieces[-1] = replace(pieces[-1], pause=pause_after(pieces[-1].text + lead))
            body = value[len(lead) :].strip()
            if speakable(body):
                pieces.append(Piece(body, pause_after(body), "fixed"))
        return pieces


def _leading_marks(text: str) -> str:
    """The white space and punctuation `text` starts with."""
    for index, char in enumerate(text):
        if char.isalnum():
            return text[:index]
    return text


def match_any(
    templates: tuple[Template, ...], text: str, *, voice: str, engine: str, emotion: str
) -> list[Piece] | None:
    """The parts of `text` by the first template that matches it, else None."""
    for template in templates:
        pieces = template.match(text, voice=voice, engine=engine, emotion=emotion)
        if pieces is not None:
            return pieces
    return None
