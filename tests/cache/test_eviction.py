"""Tests for voicecache.cache.eviction: one contract suite for every policy, then W-TinyLFU."""

from __future__ import annotations

from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecache.cache.eviction import (
    EvictionPolicy,
    FrequencySketch,
    LRUPolicy,
    PolicyName,
    WTinyLFUPolicy,
    make_policy,
)

KB = 1000

# One operation of the random workload: (op, key index, size).
_ops = st.lists(
    st.tuples(
        st.sampled_from(["admit", "admit", "admit", "access", "access", "remove", "pin", "unpin"]),
        st.integers(min_value=0, max_value=24),
        # Small sizes let several keys share the W-TinyLFU window; large ones bypass it.
        st.one_of(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=400)),
    ),
    max_size=150,
)


# Part of the contract, but module-level: Hypothesis refuses a @given method inherited
# by several classes (its example database would mix the executors).
@pytest.mark.parametrize("name", ["lru", "tinylfu"])
@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=3000), ops=_ops)
def test_invariants_hold_after_any_sequence(
    name: PolicyName, capacity: int, ops: list[tuple[str, int, int]]
) -> None:
    policy = make_policy(name, capacity)
    model: dict[str, int] = {}  # what the caller stores: key -> size
    pinned: set[str] = set()
    for op, index, size in ops:
        key = f"k{index}"
        if op == "admit":
            before = model.get(key)
            admitted, evicted = policy.admit(key, size)
            assert key not in evicted
            assert pinned.isdisjoint(evicted), "a pinned key was evicted"
            for victim in evicted:
                assert victim in model, "evicted a key that was not resident"
                assert victim not in policy
                del model[victim]
            if admitted:
                model[key] = size
                assert key in policy
            elif before is None:
                assert key not in policy
            else:
                assert model[key] == before  # refused update keeps the old entry
            if size > capacity:
                assert not admitted
        elif op == "access":
            assert policy.access(key) == (key in model)
        elif op == "remove":
            policy.remove(key)
            model.pop(key, None)
            pinned.discard(key)
        elif op == "pin" and key in model:
            policy.pin(key, True)
            pinned.add(key)
        elif op == "unpin":
            policy.pin(key, False)
            pinned.discard(key)
        assert policy.used_bytes == sum(model.values()) <= capacity
        assert len(policy) == len(model)
        assert all(k in policy for k in model)


class PolicyContract:
    """Behaviour every :class:`EvictionPolicy` must have; subclasses pick the policy."""

    name: ClassVar[PolicyName]

    def make(self, capacity_bytes: int) -> EvictionPolicy:
        return make_policy(self.name, capacity_bytes)

    def fill(self, policy: EvictionPolicy, keys: list[str], size: int) -> None:
        for key in keys:
            policy.admit(key, size)

    def test_access_reports_residency(self) -> None:
        policy = self.make(100 * KB)
        assert policy.access("a") is False
        assert policy.admit("a", 10 * KB) == (True, [])
        assert policy.access("a") is True
        assert "a" in policy and "b" not in policy

    def test_capacity_respected_and_evictions_reported(self) -> None:
        policy = self.make(100 * KB)
        resident: set[str] = set()
        for i in range(200):
            key = f"k{i}"
            admitted, evicted = policy.admit(key, 7 * KB)
            resident.difference_update(evicted)
            if admitted:
                resident.add(key)
            for victim in evicted:
                assert victim not in policy
            assert policy.used_bytes <= 100 * KB
        assert resident == {f"k{i}" for i in range(200) if f"k{i}" in policy}
        assert policy.used_bytes == 7 * KB * len(resident)

    def test_key_larger_than_capacity_is_refused(self) -> None:
        policy = self.make(100 * KB)
        policy.admit("small", 10 * KB)
        assert policy.admit("huge", 100 * KB + 1) == (False, [])
        assert "huge" not in policy
        assert "small" in policy
        assert self.make(100 * KB).admit("exact", 100 * KB) == (True, [])

    def test_remove_frees_bytes(self) -> None:
        policy = self.make(100 * KB)
        policy.admit("a", 30 * KB)
        policy.admit("b", 20 * KB)
        policy.remove("a")
        assert "a" not in policy
        assert policy.used_bytes == 20 * KB
        assert len(policy) == 1
        policy.remove("missing")  # unknown keys are ignored
        assert policy.used_bytes == 20 * KB

    def test_update_changes_size(self) -> None:
        policy = self.make(100 * KB)
        for key in ("a", "b", "c"):
            policy.admit(key, 20 * KB)
        assert policy.admit("b", 5 * KB) == (True, [])
        assert policy.used_bytes == 45 * KB
        admitted, evicted = policy.admit("b", 90 * KB)
        assert admitted
        assert "b" in policy and "b" not in evicted
        assert set(evicted) == {"a", "c"}
        assert policy.used_bytes == 90 * KB

    def test_refused_update_keeps_old_entry(self) -> None:
        policy = self.make(100 * KB)
        policy.admit("a", 20 * KB)
        assert policy.admit("a", 200 * KB) == (False, [])
        assert "a" in policy
        assert policy.used_bytes == 20 * KB

    def test_pinned_keys_are_never_evicted(self) -> None:
        policy = self.make(100 * KB)
        policy.admit("pinned", 30 * KB)
        policy.pin("pinned", True)
        for i in range(500):
            _, evicted = policy.admit(f"k{i}", (i % 7 + 1) * KB)
            assert "pinned" not in evicted
            policy.access(f"k{i}")
        assert "pinned" in policy
        assert policy.used_bytes <= 100 * KB

    def test_only_pinned_left_refuses_admission(self) -> None:
        policy = self.make(100 * KB)
        for key in ("a", "b"):
            policy.admit(key, 40 * KB)
            policy.pin(key, True)
        assert policy.admit("c", 30 * KB) == (False, [])
        assert "c" not in policy
        assert policy.admit("d", 20 * KB) == (True, [])
        policy.pin("d", True)
        assert policy.admit("e", 1) == (False, [])
        # Unpinning makes the key evictable again.
        policy.pin("a", False)
        admitted, evicted = policy.admit("e", 30 * KB)
        assert admitted or evicted == []
        assert {"b", "d"} <= {k for k in ("a", "b", "d", "e") if k in policy}
        assert policy.used_bytes <= 100 * KB

    def test_pin_unknown_key_is_ignored(self) -> None:
        # Contract (EvictionPolicy.pin): pinning a key that is not resident is ignored.
        # It neither makes the key resident nor is remembered for a later admit.
        policy = self.make(100 * KB)
        policy.pin("ghost", True)
        policy.pin("phantom", False)
        assert len(policy) == 0
        assert policy.used_bytes == 0
        assert "ghost" not in policy and "phantom" not in policy

        assert policy.admit("ghost", 100 * KB) == (True, [])
        # Had the pin been remembered, "ghost" could never be a victim and every admit
        # would be refused with (False, []). Unpinned, it must give way: LRU at once, a
        # frequency-aware policy once the newcomer's count beats the resident's.
        results = []
        for _ in range(3):
            results.append(policy.admit("other", 10 * KB))
            if results[-1][0]:
                break
        assert results[-1] == (True, ["ghost"]), results
        assert "ghost" not in policy and "other" in policy
        assert policy.used_bytes == 10 * KB

    def test_zero_size_entries(self) -> None:
        policy = self.make(10)
        assert policy.admit("empty", 0) == (True, [])
        assert policy.used_bytes == 0
        assert "empty" in policy

    def test_negative_size_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            self.make(10).admit("a", -1)


class TestLRUPolicy(PolicyContract):
    name = "lru"

    def test_evicts_least_recently_used(self) -> None:
        policy = self.make(30 * KB)
        self.fill(policy, ["a", "b", "c"], 10 * KB)
        policy.access("a")
        assert policy.admit("d", 10 * KB) == (True, ["b"])

    def test_scan_flushes_hot_set(self) -> None:
        # The weakness W-TinyLFU fixes (see TestWTinyLFUPolicy.test_scan_resistance).
        policy = self.make(1000 * KB)
        hot = [f"hot{i}" for i in range(50)]
        self.fill(policy, hot, 10 * KB)
        for _ in range(10):
            for key in hot:
                policy.access(key)
        self.fill(policy, [f"scan{i}" for i in range(2000)], 10 * KB)
        assert not any(key in policy for key in hot)


class TestWTinyLFUPolicy(PolicyContract):
    name = "tinylfu"

    def test_scan_resistance(self) -> None:
        policy = self.make(1000 * KB)
        hot = [f"hot{i}" for i in range(50)]
        self.fill(policy, hot, 10 * KB)
        for _ in range(10):
            for key in hot:
                policy.access(key)
        for i in range(2000):
            key = f"scan{i}"
            if not policy.access(key):
                policy.admit(key, 10 * KB)
        survivors = sum(key in policy for key in hot)
        # LRU keeps none of them (TestLRUPolicy.test_scan_flushes_hot_set). The sketch's rows
        # are indexed by Python's per-process salted hash, so collisions vary by run: over 300
        # hash seeds, 296 kept all 50 hot keys and 4 kept 49 (one scan key collided with a hot
        # key in every row). Asserting all 50 failed about one run in 70.
        assert survivors >= len(hot) - 1
        assert policy.used_bytes <= 1000 * KB

    def test_frequent_key_wins_admission(self) -> None:
        policy = WTinyLFUPolicy(100 * KB)
        self.fill(policy, [f"cold{i}" for i in range(10)], 10 * KB)
        # A new key competes with cold main-region keys (frequency 1) as soon as the
        # 1 % window overflows. The first attempt ties and is refused; each refused
        # admit still counts, so a repeatedly requested key gets in.
        admitted, evicted = policy.admit("wanted", 10 * KB)
        assert (admitted, evicted) == (False, [])
        admitted, evicted = policy.admit("wanted", 10 * KB)
        assert admitted
        assert len(evicted) == 1 and evicted[0].startswith("cold")
        assert policy.frequency("wanted") == 2

    def test_large_candidate_needs_to_beat_every_victim(self) -> None:
        policy = WTinyLFUPolicy(100 * KB)
        small = [f"s{i}" for i in range(10)]
        self.fill(policy, small, 10 * KB)
        for _ in range(3):
            policy.access("s0")  # s0: frequency 4, the others 1
        # "big" needs every small key's bytes, s0 included: frequency 3 is not enough.
        for _ in range(3):
            assert policy.admit("big", 95 * KB) == (False, [])
        assert "s0" in policy
        assert policy.admit("big", 95 * KB) == (False, [])  # 4 ties with s0
        admitted, evicted = policy.admit("big", 95 * KB)  # 5 beats every victim
        assert admitted
        assert sorted(evicted) == sorted(small)

    def test_probation_hit_is_promoted(self) -> None:
        policy = WTinyLFUPolicy(10_000 * KB)  # window: 100 KB
        keys = [f"k{i}" for i in range(12)]
        self.fill(policy, keys, 10 * KB)
        assert policy.region_of("k0") == "probation"  # pushed out of the full window
        assert policy.region_of("k11") == "window"
        policy.access("k0")
        assert policy.region_of("k0") == "protected"
        assert policy.region_of("zzz") is None

    def test_frequency_aging(self) -> None:
        policy = WTinyLFUPolicy(1_000_000)
        for _ in range(20):
            policy.admit("popular", 1 * KB)
        assert policy.frequency("popular") == 15  # saturated 4-bit counter
        sketch = policy.sketch
        assert sketch.resets == 0
        # Aging happens after about 10x the resident entries (at least 10x the width).
        for i in range(20 * sketch.width):
            policy.admit(f"once{i}", 1 * KB)
            if sketch.resets:
                break
        assert sketch.resets == 1
        assert policy.frequency("popular") <= 7

    def test_window_adapts_to_recency(self) -> None:
        # Every text is requested twice in a row, then never again: only a large
        # window can catch the second request, so the climber must grow it.
        policy = WTinyLFUPolicy(1000 * KB)
        start = policy.window_bytes_max
        for i in range(40_000):
            key = f"k{i // 2}"
            if not policy.access(key):
                policy.admit(key, 10 * KB)
        assert policy.window_bytes_max > 5 * start
        assert policy.used_bytes <= 1000 * KB

    def test_fixed_window_does_not_move(self) -> None:
        policy = WTinyLFUPolicy(1000 * KB, adaptive=False)
        for i in range(20_000):
            key = f"k{i // 2}"
            if not policy.access(key):
                policy.admit(key, 10 * KB)
        assert policy.window_bytes_max == 10 * KB

    def test_sketch_halves_counters(self) -> None:
        sketch = FrequencySketch(1024)
        assert sketch.width == 1024
        for _ in range(6):
            sketch.increment("k")
        assert sketch.frequency("k") == 6
        sketch.reset()
        assert sketch.frequency("k") == 3
        assert sketch.frequency("never") == 0

    def test_sketch_grows_with_entry_count(self) -> None:
        policy = WTinyLFUPolicy(10_000_000, average_entry_bytes=10_000_000, min_sketch_width=16)
        assert policy.sketch.width == 16
        self.fill(policy, [f"k{i}" for i in range(100)], 10)
        assert policy.sketch.width >= 100


def test_make_policy() -> None:
    assert isinstance(make_policy("lru", 10), LRUPolicy)
    assert isinstance(make_policy("tinylfu", 10), WTinyLFUPolicy)
    with pytest.raises(ValueError):
        make_policy("fifo", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_policy("lru", 0)
