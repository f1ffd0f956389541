"""BoundedDict: bounded by entries and by bytes, oldest first; and its byte count is an upper
bound of what the entries really take (measured with tracemalloc)."""

from __future__ import annotations

import sys
import tracemalloc

import pytest

from voicecache.bounded import ENTRY_OVERHEAD, BoundedDict, sizeof_str


def str_size(key: str, value: str) -> int:
    return sizeof_str(key) + sizeof_str(value)


def test_count_bound_evicts_the_oldest() -> None:
    bounded: BoundedDict[str, str] = BoundedDict(3, 1 << 20, str_size)
    for i in range(10):
        bounded[f"k{i}"] = "v"
    assert list(bounded) == ["k7", "k8", "k9"]
    assert bounded.evictions == 7 and len(bounded) == 3


def test_byte_bound_evicts_until_it_fits() -> None:
    entry = sizeof_str("k0") + sizeof_str("x" * 100) + ENTRY_OVERHEAD
    bounded: BoundedDict[str, str] = BoundedDict(1000, 5 * entry, str_size)
    for i in range(20):
        bounded[f"k{i % 10}"] = "x" * 100
        assert bounded.bytes <= 5 * entry
    assert len(bounded) == 5
    bounded["big"] = "y" * (10 * entry)  # larger than the whole budget: not kept
    assert "big" not in bounded and len(bounded) == 5
    bounded["k9"] = "z"  # replacing an entry recounts it
    assert bounded.bytes < 5 * entry
    assert bounded.pop("k9") == "z" and "k9" not in bounded


def test_touch_and_clear() -> None:
    bounded: BoundedDict[str, str] = BoundedDict(2, 1 << 20, str_size)
    bounded["a"], bounded["b"] = "1", "2"
    bounded.touch("a")
    bounded["c"] = "3"
    assert list(bounded) == ["a", "c"]
    bounded.clear()
    assert len(bounded) == 0 and bounded.bytes == 0


def test_nothing_fits_in_nothing() -> None:
    with pytest.raises(ValueError):
        BoundedDict(0, 100, str_size)


def test_counted_bytes_bound_the_real_footprint() -> None:
    """20,000 entries of 32-byte digests to short strings: tracemalloc's growth stays under
    the counted bytes."""
    bounded: BoundedDict[bytes, tuple[str, str]] = BoundedDict(
        100_000,
        1 << 30,
        lambda key, value: sys.getsizeof(key) + sys.getsizeof(value) + sizeof_str(value[0]),
    )
    engine = "espeak"
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(20_000):
        bounded[i.to_bytes(32, "big")] = (f"{i:064x}.wav", engine)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown <= bounded.bytes, (grown, bounded.bytes)
    assert grown >= bounded.bytes * 0.5  # and not a wild overestimate
