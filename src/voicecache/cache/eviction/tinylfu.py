"""Window-TinyLFU (Caffeine's design), bounded by bytes: a small LRU window for new keys, a
segmented-LRU main region, and a frequency sketch deciding which of two keys is worth keeping.
It resists scans of one-off texts that would flush an LRU cache.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator

from voicecache.cache.eviction.base import EvictionPolicy, check_size
from voicecache.cache.eviction.sketch import FrequencySketch

# Hill climber constants, Caffeine's defaults: step 6.25 % of capacity, decaying 2 %
# per move, restarted when the hit rate jumps by 5 points.
_CLIMB_STEP = 0.0625
_CLIMB_DECAY = 0.98
_CLIMB_RESTART = 0.05


class _Region:
    """One LRU-ordered segment of the W-TinyLFU cache (oldest entry first)."""

    __slots__ = ("bytes", "entries", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0


class WTinyLFUPolicy(EvictionPolicy):
    """Window-TinyLFU (Caffeine's design), bounded by bytes.

    Layout: an LRU *window* (``window_fraction`` of the bytes, 1 % by default) where
    every new key lands, and a *main* region organised as segmented LRU: *probation*
    (keys seen once in main) and *protected* (keys hit again while in probation,
    ``protected_fraction`` of main). Keys pushed out of the window become candidates
    for main; when the cache is over capacity, a candidate competes with the probation
    victims (then protected ones) it would displace, and the frequency sketch decides.

    Size-aware admission: sizes vary 20 KB–2 MB, so a candidate may need several
    victims' bytes. It is admitted only if its estimated frequency is strictly greater
    than that of *every* victim it would displace (``freq > max(victim freqs)``). That
    never trades a more popular key for a less popular one, so the object hit ratio
    cannot drop, while a big candidate with many small, cold victims still gets in
    (which is what byte hit ratio, i.e. saved synthesis time, wants). A sum-of-victim
    frequencies rule would starve large items; a pairwise rule (Caffeine's weighted
    mode) lets one warm large key evict dozens of slightly colder small ones.

    Like Caffeine, a warm candidate (frequency > 5) that loses is still admitted with
    probability 1/128, so an attacker cannot pin victims by inflating colliding
    counters (hash flooding).

    With ``adaptive`` (the default) the window starts at ``window_fraction`` and is
    resized by hill climbing on the hit rate, as in Caffeine (see :meth:`_climb`).
    On strongly recency-biased traffic this policy can still fall below LRU.
    """

    def __init__(
        self,
        capacity_bytes: int,
        *,
        window_fraction: float = 0.01,
        protected_fraction: float = 0.80,
        average_entry_bytes: int = 50_000,
        min_sketch_width: int = 1024,
        adaptive: bool = True,
        seed: int = 0,
    ) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        if not 0.0 < window_fraction < 1.0 or not 0.0 < protected_fraction < 1.0:
            raise ValueError("window_fraction and protected_fraction must be in (0, 1)")
        self.capacity_bytes = capacity_bytes
        self._window_max = max(1, int(capacity_bytes * window_fraction))
        self._protected_max = int((capacity_bytes - self._window_max) * protected_fraction)
        self._window = _Region("window")
        self._probation = _Region("probation")
        self._protected = _Region("protected")
        self._where: dict[str, _Region] = {}
        self._pinned: set[str] = set()
        self._pinned_bytes = 0
        # The sketch is sized from an estimated entry count; it grows (like Caffeine's
        # weighted caches) if more entries than counters per row are ever resident.
        self._sketch = FrequencySketch(max(min_sketch_width, capacity_bytes // average_entry_bytes))
        self._min_sample = 10 * min_sketch_width
        # Only used for the hash-flooding escape hatch; seeded so runs are repeatable.
        self._rng = random.Random(seed)
        # Hill climber state (Caffeine's window adaptation), see _climb().
        self._adaptive = adaptive
        self._sample_hits = 0
        self._sample_misses = 0
        self._previous_hit_rate = 0.0
        self._step = -_CLIMB_STEP * capacity_bytes  # first probe shrinks the window

    # -- introspection -------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._window.bytes + self._probation.bytes + self._protected.bytes

    @property
    def sketch(self) -> FrequencySketch:
        """The frequency sketch (exposed for tests and diagnostics)."""
        return self._sketch

    def frequency(self, key: str) -> int:
        """Estimated recent request count of ``key``, resident or not."""
        return self._sketch.frequency(key)

    def region_of(self, key: str) -> str | None:
        """``"window"``, ``"probation"``, ``"protected"`` or None if not resident."""
        region = self._where.get(key)
        return None if region is None else region.name

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __repr__(self) -> str:
        return (
            f"WTinyLFUPolicy(capacity_bytes={self.capacity_bytes}, "
            f"used_bytes={self.used_bytes}, entries={len(self._where)}, "
            f"window={self._window.bytes}, probation={self._probation.bytes}, "
            f"protected={self._protected.bytes})"
        )

    # -- operations ----------------------------------------------------------------

    @property
    def window_bytes_max(self) -> int:
        """Current byte budget of the admission window (moves when adaptive)."""
        return self._window_max

    def access(self, key: str) -> bool:
        region = self._where.get(key)
        if region is None:
            return False
        self._sample_hits += 1
        self._sketch.increment(key)
        if region is self._probation:
            self._promote(key)
        else:
            region.entries.move_to_end(key)
        return True

    def _promote(self, key: str) -> None:
        """Move a probation hit to protected, demoting protected's LRU if it overflows."""
        probation, protected = self._probation, self._protected
        size = probation.entries.pop(key)
        probation.bytes -= size
        protected.entries[key] = size
        protected.bytes += size
        self._where[key] = protected
        if protected.bytes > self._protected_max:
            self._demote_protected_overflow()

    def admit(self, key: str, size: int) -> tuple[bool, list[str]]:
        check_size(size)
        self._sketch.increment(key)
        region = self._where.get(key)
        if region is not None:
            return self._update(key, region, size)
        self._sample_misses += 1
        if self._adaptive and self._sample_hits + self._sample_misses >= self._climb_period():
            self._climb()
        if size > self.capacity_bytes - self._pinned_bytes:
            return False, []
        window = self._window
        window.entries[key] = size
        window.bytes += size
        self._where[key] = window
        entries = len(self._where)
        if entries > self._sketch.width:
            self._grow_sketch()
        # Age after ~10x the entries actually resident (Caffeine: 10x maximum size).
        # The width comes from a guessed average size; the period must not, or large
        # entries would make popularity decay far too slowly.
        self._sketch.sample_size = max(self._min_sample, 10 * entries)
        evicted = self._maintain(key, compete=True)
        return key in self._where, evicted

    def _update(self, key: str, region: _Region, size: int) -> tuple[bool, list[str]]:
        old = region.entries[key]
        pinned = key in self._pinned
        other_pinned = self._pinned_bytes - (old if pinned else 0)
        if size > self.capacity_bytes - other_pinned:
            return False, []
        region.entries[key] = size
        region.entries.move_to_end(key)
        region.bytes += size - old
        if pinned:
            self._pinned_bytes += size - old
        # The caller is replacing a value it already holds: the key itself never has
        # to compete for its place again.
        return True, self._maintain(key, compete=False)

    def _climb_period(self) -> int:
        # Caffeine samples 10x its maximum entry count. Simulated (benchmarks/
        # simulate.py, 1M requests): 10x adapts too slowly to rescue recency-heavy
        # traffic, 1x makes the climber wander on stationary Zipf (-5 points at 1 %);
        # 3x gains 6-14 points on recency traces and stays within ~1 point on Zipf.
        return max(1000, 3 * len(self._where))

    def _climb(self) -> None:
        """Resize the window by hill climbing on the hit rate (Caffeine's climber).

        A fixed 1 % window loses to LRU on recency-heavy traffic (a fresh sentence
        replayed a few times, then never again), because new keys must out-score
        established ones before they had a chance to be hit. Every sample period the
        window moves by ``step`` bytes; the direction is kept while the hit rate
        improves and reversed when it drops. Steps decay so the size settles, and a
        large change of hit rate (new workload) restarts with a full step.
        """
        requests = self._sample_hits + self._sample_misses
        hit_rate = self._sample_hits / requests
        change = hit_rate - self._previous_hit_rate
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= _CLIMB_RESTART:
            self._step = _CLIMB_STEP * self.capacity_bytes * (1 if amount >= 0 else -1)
        else:
            self._step = _CLIMB_DECAY * amount
        self._previous_hit_rate = hit_rate
        self._sample_hits = self._sample_misses = 0
        if amount > 0:
            self._grow_window(int(amount))
        elif amount < 0:
            self._shrink_window(int(-amount))

    def _grow_window(self, amount: int) -> None:
        quota = min(amount, self._protected_max)
        if quota <= 0:
            return
        self._protected_max -= quota
        self._window_max += quota
        probation, protected, window = self._probation, self._protected, self._window
        self._demote_protected_overflow()
        # Hand the window the main region's least valuable keys, up to its new budget.
        while window.bytes < self._window_max:
            source = probation if probation.entries else protected
            if not source.entries:
                break
            key, size = next(iter(source.entries.items()))
            if window.bytes + size > self._window_max:
                break
            del source.entries[key]
            source.bytes -= size
            window.entries[key] = size
            window.entries.move_to_end(key, last=False)  # oldest in the window
            window.bytes += size
            self._where[key] = window

    def _shrink_window(self, amount: int) -> None:
        quota = min(amount, self._window_max - 1)
        if quota <= 0:
            return
        self._window_max -= quota
        self._protected_max += quota
        window, probation = self._window, self._probation
        # Overflowing window keys go to probation without a contest: total bytes do
        # not change, so nobody has to be evicted for them.
        while window.bytes > self._window_max and window.entries:
            key, size = window.entries.popitem(last=False)
            window.bytes -= size
            probation.entries[key] = size
            probation.bytes += size
            self._where[key] = probation

    def _demote_protected_overflow(self) -> None:
        probation, protected = self._probation, self._protected
        while protected.bytes > self._protected_max and protected.entries:
            demoted, size = protected.entries.popitem(last=False)
            protected.bytes -= size
            probation.entries[demoted] = size
            probation.bytes += size
            self._where[demoted] = probation

    def _grow_sketch(self) -> None:
        # Resizing loses counts (as in Caffeine); it happens O(log n) times at most.
        self._sketch = FrequencySketch(self._sketch.width * 2)

    def _maintain(self, incoming: str, *, compete: bool) -> list[str]:
        """Drain window overflow into probation, then evict until within capacity.

        ``incoming`` is the key being admitted: it is never reported as evicted and is
        not a fallback victim; with ``compete`` False it is not a candidate either.
        """
        evicted: list[str] = []
        window, probation = self._window, self._probation
        candidates: list[str] = []
        while window.bytes > self._window_max and window.entries:
            key, size = window.entries.popitem(last=False)
            window.bytes -= size
            probation.entries[key] = size
            probation.bytes += size
            self._where[key] = probation
            # Pinned keys cannot lose, so they skip the contest.
            if key not in self._pinned and (compete or key != incoming):
                candidates.append(key)

        if self.used_bytes > self.capacity_bytes and candidates:
            self._run_admission(candidates, incoming, evicted)

        excess = self.used_bytes - self.capacity_bytes
        if excess > 0:
            # Still over capacity (a resident key grew, or candidates found no victims
            # and were kept because they are pinned): evict in LRU order, main first.
            victims: list[str] = []
            for key, size in self._eviction_order():
                if key == incoming or key in self._pinned:
                    continue
                victims.append(key)
                excess -= size
                if excess <= 0:
                    break
            for key in victims:
                self._drop(key)
            evicted.extend(victims)
        return evicted

    def _run_admission(self, candidates: list[str], incoming: str, evicted: list[str]) -> None:
        sketch = self._sketch
        contenders = set(candidates)
        contenders.add(incoming)
        for cand in candidates:
            excess = self.used_bytes - self.capacity_bytes
            if excess <= 0:
                return
            cand_size = self._probation.entries[cand]
            need = min(cand_size, excess)
            cand_freq = sketch.frequency(cand)
            victims: list[str] = []
            freed = 0
            max_victim_freq = -1
            for key, size in self._main_victim_order():
                if key in contenders or key in self._pinned:
                    continue
                freq = sketch.frequency(key)
                if freq >= cand_freq and cand_freq <= 5:
                    # Lost for sure (no hash-flooding escape below 6): stop early.
                    max_victim_freq = freq
                    break
                if freq > max_victim_freq:
                    max_victim_freq = freq
                victims.append(key)
                freed += size
                if freed >= need:
                    break
            admit = freed >= need and (
                cand_freq > max_victim_freq or (cand_freq > 5 and self._rng.random() < 1.0 / 128)
            )
            if admit:
                for key in victims:
                    self._drop(key)
                evicted.extend(victims)
            else:
                self._drop(cand)
                if cand != incoming:
                    evicted.append(cand)

    def _main_victim_order(self) -> Iterator[tuple[str, int]]:
        yield from self._probation.entries.items()
        yield from self._protected.entries.items()

    def _eviction_order(self) -> Iterator[tuple[str, int]]:
        yield from self._probation.entries.items()
        yield from self._protected.entries.items()
        yield from self._window.entries.items()

    def _drop(self, key: str) -> None:
        region = self._where.pop(key)
        size = region.entries.pop(key)
        region.bytes -= size
        if key in self._pinned:
            self._pinned.discard(key)
            self._pinned_bytes -= size

    def remove(self, key: str) -> None:
        if key in self._where:
            self._drop(key)

    def pin(self, key: str, pinned: bool) -> None:
        region = self._where.get(key)
        if region is None or (key in self._pinned) == pinned:
            return
        size = region.entries[key]
        if pinned:
            self._pinned.add(key)
            self._pinned_bytes += size
        else:
            self._pinned.discard(key)
            self._pinned_bytes -= size
