"""The in-process tier: a dict of entries bounded by bytes, with a pluggable eviction policy
(W-TinyLFU by default, LRU by setting; see `cache/eviction/`).

This is the product's hot loop, so `peek` is synchronous and does a dict lookup plus one
policy update: no copies, no re-encoding, no validation. Entries are immutable, so the bytes
object handed out is the stored one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from voicecache.cache.eviction import EvictionPolicy, make_policy
from voicecache.model import Entry, EntryMeta, Tier, TierStats


class MemoryTier(Tier):
    """Entries in a dict, at most `capacity_bytes` of audio."""

    name = "memory"

    def __init__(self, capacity_bytes: int, policy: str = "tinylfu") -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: dict[str, Entry] = {}
        self._policy: EvictionPolicy = make_policy(policy, capacity_bytes)  # type: ignore[arg-type]
        self.evictions = 0
        self.rejected = 0

    def peek(self, entry_id: str) -> Entry | None:
        """Synchronous lookup for the hit path."""
        entry = self._entries.get(entry_id)
        if entry is not None:
            self._policy.access(entry_id)
        return entry

    def header(self, entry_id: str) -> EntryMeta | None:
        """The stored header, without counting an access (purges, sweeps)."""
        entry = self._entries.get(entry_id)
        return None if entry is None else entry.meta

    async def get(self, entry_id: str) -> Entry | None:
        return self.peek(entry_id)

    def put(self, entry_id: str, entry: Entry) -> bool:
        """Store unless the eviction policy declines; returns whether it was stored."""
        admitted, victims = self._policy.admit(entry_id, len(entry.data))
        for victim in victims:
            if self._entries.pop(victim, None) is not None:
                self.evictions += 1
        if not admitted:
            self._entries.pop(entry_id, None)
            self.rejected += 1
            return False
        self._entries[entry_id] = entry
        self._policy.pin(entry_id, entry.meta.pinned)
        return True

    async def set(self, entry_id: str, entry: Entry) -> None:
        self.put(entry_id, entry)

    async def delete(self, entry_id: str) -> int:
        return self.remove(entry_id)

    def remove(self, entry_id: str) -> int:
        """Synchronous delete; returns the bytes freed (0 when absent)."""
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return 0
        self._policy.remove(entry_id)
        return len(entry.data)

    async def touch(self, entry_id: str, meta: EntryMeta) -> None:
        entry = self._entries.get(entry_id)
        if entry is not None:
            self._entries[entry_id] = Entry(entry.data, meta)
            self._policy.pin(entry_id, meta.pinned)

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        for entry_id, entry in list(self._entries.items()):
            yield entry_id, entry.meta

    async def stats(self) -> TierStats:
        return TierStats(
            name=self.name,
            entries=len(self._entries),
            bytes=self._policy.used_bytes,
            capacity_bytes=self.capacity_bytes,
            evictions=self.evictions,
            extra={"rejected": self.rejected},
        )
