"""Plain least-recently-used eviction, bounded by bytes."""

from __future__ import annotations

from collections import OrderedDict

from voicecache.cache.eviction.base import EvictionPolicy, check_size


class LRUPolicy(EvictionPolicy):
    """Least-recently-used eviction bounded by the total size of resident keys."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        # Oldest first: popitem(last=False) yields the least recently used key.
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._used = 0
        self._pinned: set[str] = set()
        self._pinned_bytes = 0

    @property
    def used_bytes(self) -> int:
        return self._used

    def access(self, key: str) -> bool:
        try:
            self._entries.move_to_end(key)
        except KeyError:
            return False
        return True

    def admit(self, key: str, size: int) -> tuple[bool, list[str]]:
        check_size(size)
        entries = self._entries
        old = entries.get(key)
        if old is None:
            if size > self.capacity_bytes - self._pinned_bytes:
                return False, []
            entries[key] = size
            self._used += size
        else:
            pinned = key in self._pinned
            other_pinned = self._pinned_bytes - (old if pinned else 0)
            if size > self.capacity_bytes - other_pinned:
                return False, []
            entries[key] = size
            entries.move_to_end(key)
            self._used += size - old
            if pinned:
                self._pinned_bytes += size - old
        return True, self._evict_overflow(keep=key)

    def _evict_overflow(self, keep: str) -> list[str]:
        evicted: list[str] = []
        entries = self._entries
        if self._used <= self.capacity_bytes:
            return evicted
        if not self._pinned:
            # Fast path. `keep` is the most recent entry and fits on its own (checked by
            # the caller), so it is never reached.
            while self._used > self.capacity_bytes:
                victim, size = entries.popitem(last=False)
                self._used -= size
                evicted.append(victim)
            return evicted
        excess = self._used - self.capacity_bytes
        for victim, size in entries.items():
            if victim == keep or victim in self._pinned:
                continue
            evicted.append(victim)
            excess -= size
            if excess <= 0:
                break
        for victim in evicted:
            self._used -= entries.pop(victim)
        return evicted

    def remove(self, key: str) -> None:
        size = self._entries.pop(key, None)
        if size is None:
            return
        self._used -= size
        if key in self._pinned:
            self._pinned.discard(key)
            self._pinned_bytes -= size

    def pin(self, key: str, pinned: bool) -> None:
        size = self._entries.get(key)
        if size is None or (key in self._pinned) == pinned:
            return
        if pinned:
            self._pinned.add(key)
            self._pinned_bytes += size
        else:
            self._pinned.discard(key)
            self._pinned_bytes -= size

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return (
            f"LRUPolicy(capacity_bytes={self.capacity_bytes}, used_bytes={self._used}, "
            f"entries={len(self._entries)})"
        )
