"""The answer to a request and how it was obtained: `SpeechResult`, `Status`, and
`SpeechStream` for the answer as a stream of bytes."""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
)
from dataclasses import dataclass
from typing import Literal

from voicecache import codecs
from voicecache.codecs import AudioFormat
from voicecache.model.entries import Entry, EntryMeta

# -- the answer ---------------------------------------------------------------------------------

# HIT: from a tier; MISS: this request called the engine; COALESCED: another request (here or
# on another replica) called it; STALE: a stale copy, served after an engine error or while it
# is refreshed in the background; PARTIAL: a segmented text, some segments from the cache.
Status = Literal["HIT", "MISS", "COALESCED", "STALE", "PARTIAL"]


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """Audio for a request and how it was obtained."""

    data: bytes
    format: AudioFormat
    key: str
    status: Status
    tier: str | None
    meta: EntryMeta
    stored: bool = True
    segments: tuple[int, int] | None = None  # a segmented text: (hits, total) segments

    @classmethod
    def of(
        cls, entry: Entry, status: Status, tier: str | None, stored: bool = True
    ) -> SpeechResult:
        """The result serving `entry`."""
        meta = entry.meta
        return cls(entry.data, meta.format, meta.key, status, tier, meta, stored)

    @property
    def content_type(self) -> str:
        return codecs.CONTENT_TYPES[self.format]

    @property
    def etag(self) -> str:
        return f'"{self.key}.{self.format}"'


@dataclass(slots=True)
class SpeechStream:
    """Audio for a request as a stream of bytes (`Gateway.speak_stream`).

    Everything a response's headers need is known before the first byte: how the audio is
    obtained (`status`, `tier`), its `key` and `format`, and whether and how long it may be
    kept (`stored`, `private`, `expires_at`: None is pinned). `chunks` yields the bytes, and
    raises when the audio breaks off before it is complete (an upstream stream cut short):
    the bytes already yielded must then not be taken for a whole file. `result` is the
    complete audio once known: at once for stored audio, at the end of a live render."""

    key: str
    format: AudioFormat
    status: Status
    tier: str | None
    stored: bool
    private: bool
    expires_at: float | None
    characters: int
    chunks: AsyncGenerator[bytes, None]
    result: SpeechResult | None = None
    segments: tuple[int, int] | None = None  # as in `SpeechResult`

    @property
    def content_type(self) -> str:
        return codecs.CONTENT_TYPES[self.format]
