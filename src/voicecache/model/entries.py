"""What a cache tier stores (`Entry`, `EntryMeta`: audio behind a checksummed header) and the
tier protocol (`Tier`, `TierStats`)."""

from __future__ import annotations

import hashlib
import json
import struct
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterator,
)
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from voicecache.codecs import AudioFormat
from voicecache.errors import StorageError

# -- what tiers store ---------------------------------------------------------------------------

# Tiers that persist bytes (disk, Redis) store `Entry.to_bytes()`: this magic, a length-prefixed
# JSON header and the audio, with a checksum of the audio in the header that `from_bytes`
# verifies, so a corrupt entry is dropped and never served.
MAGIC = b"VC1\n"
_HEADER_LENGTH = struct.Struct(">I")


def checksum(data: bytes) -> str:
    """A fast 128-bit digest of the audio, verified on every read from a persistent tier."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """The header stored with each audio entry."""

    key: str
    format: AudioFormat
    sample_rate: int
    duration: float
    size: int
    checksum: str
    created: float
    expires_at: float | None  # None: pinned, never expires
    stale_until: float | None  # expires_at plus grace; None when pinned
    engine: str = ""
    model_version: str = ""
    voice: str = ""
    voice_version: str = ""
    emotion: str = ""
    speed: float = 1.0
    text: str = ""
    tags: tuple[str, ...] = ()
    tenant: str | None = None
    personalized: bool = False
    sliding: bool = False
    ttl: float | None = None
    max_expires_at: float | None = None

    @property
    def pinned(self) -> bool:
        return self.expires_at is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryMeta:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["tags"] = tuple(known.get("tags") or ())
        return cls(**known)

    def with_expiry(self, expires_at: float | None, grace: float) -> EntryMeta:
        stale_until = None if expires_at is None else expires_at + grace
        return replace(self, expires_at=expires_at, stale_until=stale_until)


@dataclass(frozen=True, slots=True)
class Entry:
    """Audio bytes and their header."""

    data: bytes
    meta: EntryMeta

    def to_bytes(self) -> bytes:
        header = json.dumps(self.meta.to_json(), separators=(",", ":")).encode()
        return b"".join((MAGIC, _HEADER_LENGTH.pack(len(header)), header, self.data))

    @classmethod
    def from_bytes(cls, blob: bytes, *, verify: bool = True) -> Entry:
        """Parse and verify; raises `StorageError` for anything corrupt. `verify=False` checks
        the header and the audio's length but not its checksum (`Tier.read`)."""
        meta = read_header(blob)
        start = len(MAGIC) + _HEADER_LENGTH.size + _HEADER_LENGTH.unpack_from(blob, 4)[0]
        data = blob[start:]
        if len(data) != meta.size or (verify and checksum(data) != meta.checksum):
            raise StorageError(f"checksum mismatch for {meta.key}")
        return cls(data, meta)


def read_header(blob: bytes) -> EntryMeta:
    """Parse only the header of a serialized entry (cheap: used by scans)."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _HEADER_LENGTH.size:
        raise StorageError("not a voicecache entry")
    (length,) = _HEADER_LENGTH.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _HEADER_LENGTH.size
    try:
        return EntryMeta.from_json(json.loads(blob[start : start + length]))
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"corrupt entry header: {exc}") from exc


@dataclass(slots=True)
class TierStats:
    """Counters a tier reports for metrics, `voicecache stats` and the dashboard."""

    name: str
    entries: int = 0
    bytes: int = 0
    capacity_bytes: int | None = None
    evictions: int = 0
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Tier(ABC):
    """A cache tier. Storage ids are `<key digest>.<format>`.

    Tiers keep an entry until `meta.stale_until` (expiry plus the grace period); whether an
    entry is fresh or stale is decided by `TieredCache`, not by each tier."""

    name: str

    @abstractmethod
    async def get(self, entry_id: str) -> Entry | None:
        """The entry, or None when absent (or corrupt, which the tier also deletes)."""

    async def read(self, entry_id: str) -> Entry | None:
        """`get` with cheap integrity checks (header and length, not the checksum), for the
        fast lane's hits: `TieredCache.get(cheap=True)` verifies each stored copy's checksum
        once per process instead. Default: `get`."""
        return await self.get(entry_id)

    @abstractmethod
    async def set(self, entry_id: str, entry: Entry) -> None:
        """Store or overwrite; the tier may decline (admission, size) silently."""

    @abstractmethod
    async def delete(self, entry_id: str) -> int:
        """Remove; returns the bytes freed (0 when absent)."""

    @abstractmethod
    def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every stored id with its header (for purge, sweeps and inspection); tiers implement
        it as an async generator (`async def scan(self): ... yield ...`)."""

    @abstractmethod
    async def stats(self) -> TierStats:
        """Entries, bytes and counters."""

    async def touch(self, entry_id: str, meta: EntryMeta) -> None:
        """Replace the header of a stored entry (sliding expiry). Default: rewrite it."""
        entry = await self.get(entry_id)
        if entry is not None:
            await self.set(entry_id, Entry(entry.data, meta))

    async def find(self, *, voice: str | None = None, tag: str | None = None) -> list[str] | None:
        """Ids of entries with this voice and/or tag (both: entries with both), from an index.

        None means "not indexed here": the caller scans instead. Tiers with an index (Redis)
        may return ids that have expired or been evicted since; callers tolerate those."""
        return None

    async def delete_matching(self, scope: Any) -> tuple[int, int] | None:
        """Delete what a purge or sweep scope covers (`cache/tiers/scopes.py`), found through
        the tier's own index; returns (entries, bytes freed).

        None means "no index answers this here": the caller uses `find` or `scan` instead."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, files and threads."""
