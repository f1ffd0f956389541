"""`BoundedDict`: a dict that can never outgrow a number of entries nor a number of bytes.

Every per-process structure that grows with what clients send (distinct bodies, keys, lines,
tokens, addresses) is one of these, so no sequence of requests can grow memory without bound.
Bytes are counted by a size function the owner supplies (an upper estimate of one entry's
footprint: its key and value plus the dict's own per-entry cost, `ENTRY_OVERHEAD`); when a
write passes either bound, the oldest entries (insertion order) go first.

Reads are a plain dict lookup: the bounds cost something only on writes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# What the two dicts (values, sizes) spend per entry beyond key and value objects: hash-table
# slots and indices, and the size as an int object; measured, rounded up (tests/test_bounded.py).
ENTRY_OVERHEAD = 160


def sizeof_str(value: str) -> int:
    """The bytes a `str` object takes (header included)."""
    return sys.getsizeof(value)


class BoundedDict(Generic[K, V]):
    """A mapping bounded by `max_entries` and by `max_bytes` (as measured by `size`)."""

    def __init__(self, max_entries: int, max_bytes: int, size: Callable[[K, V], int]) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a BoundedDict needs room for at least one entry")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size
        self._data: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self.bytes = 0
        self.evictions = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._data.get(key, default)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def items(self) -> list[tuple[K, V]]:
        return list(self._data.items())

    def values(self) -> list[V]:
        return list(self._data.values())

    def __setitem__(self, key: K, value: V) -> None:
        size = self._size(key, value) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            self.pop(key)  # bigger than the whole budget: not kept at all
            return
        old = self._sizes.get(key)
        if old is not None:
            self.bytes -= old
        self._data[key] = value
        self._sizes[key] = size
        self.bytes += size
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self.pop(oldest)
            self.evictions += 1

    def touch(self, key: K) -> None:
        """Make `key` the newest entry (last to be evicted); for LRU-like use."""
        value = self._data.pop(key)
        self._data[key] = value

    def pop(self, key: K, default: V | None = None) -> V | None:
        if key not in self._data:
            return default
        self.bytes -= self._sizes.pop(key)
        return self._data.pop(key)

    def clear(self) -> None:
        self._data.clear()
        self._sizes.clear()
        self.bytes = 0
