"""The frequency sketch behind W-TinyLFU: how often was each key asked for, recently.

A count-min sketch of 4 rows of saturating counters, halved periodically so popularity decays.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
# Counters are 4-bit in spirit (saturate at 15) but stored one per byte: a bytearray
# indexed directly is faster in Python than unpacking nibbles, and memory is small
# (4 rows x width bytes).
_COUNTER_MAX = 15
_HALVE = bytes(i >> 1 for i in range(256))
_DEPTH = 4


class FrequencySketch:
    """Count-min sketch of saturating 4-bit counters with periodic aging.

    Estimates how often each key was seen recently. After ``sample_size`` increments
    every counter is halved, so popularity decays and yesterday's hits do not protect
    a key forever (TinyLFU's "reset"). Indices come from Python's ``hash(str)``: fast
    (cached on the str object) and deterministic within a process, but salted per
    process, so estimates may differ slightly between runs.
    """

    def __init__(self, width: int, *, sample_factor: int = 10) -> None:
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.width = 1 << (width - 1).bit_length()
        self._mask = self.width - 1
        self._table = bytearray(_DEPTH * self.width)
        self.sample_size = sample_factor * self.width
        self._additions = 0
        self.resets = 0

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        h = hash(key) & _MASK64
        # splitmix64 finaliser gives a second, independent 64-bit hash without hashing
        # the string again; each row takes 32 bits from one of the two hashes.
        g = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        g = ((g ^ (g >> 27)) * 0x94D049BB133111EB) & _MASK64
        g ^= g >> 31
        m = self._mask
        w = self.width
        return (h & m, w + ((h >> 32) & m), 2 * w + (g & m), 3 * w + ((g >> 32) & m))

    def frequency(self, key: str) -> int:
        """Estimated recent count of ``key`` (0..15)."""
        t = self._table
        a, b, c, d = self._indexes(key)
        return min(t[a], t[b], t[c], t[d])

    def increment(self, key: str) -> None:
        """Count one occurrence of ``key``; may trigger aging."""
        t = self._table
        a, b, c, d = self._indexes(key)
        low = min(t[a], t[b], t[c], t[d])
        if low >= _COUNTER_MAX:
            return
        # Conservative update: only the counters at the current minimum grow. The
        # estimate is the same min, but collisions inflate other keys far less.
        if t[a] == low:
            t[a] = low + 1
        if t[b] == low:
            t[b] = low + 1
        if t[c] == low:
            t[c] = low + 1
        if t[d] == low:
            t[d] = low + 1
        self._additions += 1
        if self._additions >= self.sample_size:
            self.reset()

    def reset(self) -> None:
        """Halve every counter (aging). ``bytearray.translate`` does it in C."""
        self._table = self._table.translate(_HALVE)
        self._additions //= 2
        self.resets += 1
