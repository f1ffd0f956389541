"""The in-process tier: a dict of entries bounded by bytes, with a pluggable eviction policy
(W-TinyLFU by default, LRU by setting; see `cache/eviction/`).

Pinned entries are never evicted, so they have their own budget (`pinned_bytes`, by default
half the tier, `VOICECACHE_PINNED_BYTES`): a pinned entry past it is kept unpinned, so the
policy may evict it like any other; that is logged once and counted in `pinned_rejected`.

This is the product's hot loop, so `peek` is synchronous and does a dict lookup plus one
policy update: no copies, no re-encoding, no validation. Entries are immutable, so the bytes
object handed out is the stored one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from voicecache.cache.eviction import EvictionPolicy, make_policy
from voicecache.model import Entry, EntryMeta, Tier, TierStats

log = logging.getLogger(__name__)


class MemoryTier(Tier):
    """Entries in a dict, at most `capacity_bytes` of audio."""

    name = "memory"

    def __init__(
        self, capacity_bytes: int, policy: str = "tinylfu", *, pinned_bytes: int | None = None
    ) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: dict[str, Entry] = {}
        self._policy: EvictionPolicy = make_policy(policy, capacity_bytes)  # type: ignore[arg-type]
        self.pinned_capacity = (
            capacity_bytes // 2
            if pinned_bytes is None
            else max(0, min(pinned_bytes, capacity_bytes))
        )
        self._pinned: dict[str, int] = {}  # pinned id -> bytes
        self._pinned_used = 0
        self.evictions = 0
        self.rejected = 0
        self.pinned_rejected = 0

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
                self._unpin(victim)
        if not admitted:
            # The policy keeps a refused key's old size; the old value is dropped here, so
            # the policy must forget the key too or its bytes stay counted.
            if self._entries.pop(entry_id, None) is not None:
                self._policy.remove(entry_id)
            self._unpin(entry_id)
            self.rejected += 1
            return False
        self._entries[entry_id] = entry
        self._pin(entry_id, entry.meta.pinned, len(entry.data))
        return True

    def _pin(self, entry_id: str, pinned: bool, size: int) -> None:
        """Pin within the pinned budget; past it the entry stays evictable."""
        self._unpin(entry_id)
        if pinned and self._pinned_used + size > self.pinned_capacity:
            pinned = False
            self.pinned_rejected += 1
            if self.pinned_rejected == 1:
                log.warning(
                    "memory tier: pinned entries exceed their budget of %d bytes "
                    "(VOICECACHE_PINNED_BYTES); keeping the excess unpinned, so it can be "
                    "evicted",
                    self.pinned_capacity,
                )
        if pinned:
            self._pinned[entry_id] = size
            self._pinned_used += size
        self._policy.pin(entry_id, pinned)

    def _unpin(self, entry_id: str) -> None:
        self._pinned_used -= self._pinned.pop(entry_id, 0)

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
        self._unpin(entry_id)
        return len(entry.data)

    async def touch(self, entry_id: str, meta: EntryMeta) -> None:
        entry = self._entries.get(entry_id)
        if entry is not None:
            self._entries[entry_id] = Entry(entry.data, meta)
            self._pin(entry_id, meta.pinned, len(entry.data))

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
            extra={
                "rejected": self.rejected,
                "pinned_bytes": self._pinned_used,
                "pinned_capacity_bytes": self.pinned_capacity,
                "pinned_rejected": self.pinned_rejected,
            },
        )
