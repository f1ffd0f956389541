"""Byte-weighted eviction policies for the in-memory cache tier.

A policy only does bookkeeping: it tracks which keys are resident and how many bytes
each one takes, decides what to evict and whether to admit a new key. It never stores
values. The memory tier (and ``benchmarks/simulate.py``) owns the values and follows
the policy's decisions::

    if policy.access(key):              # every lookup; True on a hit
        return values[key]
    value = fetch_from_lower_tier()
    admitted, evicted = policy.admit(key, len(value))
    for victim in evicted:
        del values[victim]
    if admitted:
        values[key] = value

Two policies share the :class:`EvictionPolicy` interface (``base.py``), one module each:

* :class:`LRUPolicy` (``lru.py``): plain least-recently-used, bounded by bytes.
* :class:`WTinyLFUPolicy` (``tinylfu.py``): Caffeine's Window-TinyLFU, bounded by bytes. A
  small LRU window absorbs bursts of new keys; a frequency sketch (``sketch.py``) then
  decides whether a key leaving the window is worth more than the keys it would push out of
  the main region. It resists scans of one-off texts that would flush an LRU cache.

All policies are synchronous and not thread-safe: the caller serialises access (the
memory tier runs them on the event loop thread).
"""

from __future__ import annotations

from voicecache.cache.eviction.base import EvictionPolicy, PolicyName
from voicecache.cache.eviction.lru import LRUPolicy
from voicecache.cache.eviction.sketch import FrequencySketch
from voicecache.cache.eviction.tinylfu import WTinyLFUPolicy

__all__ = [
    "EvictionPolicy",
    "FrequencySketch",
    "LRUPolicy",
    "PolicyName",
    "WTinyLFUPolicy",
    "make_policy",
]


def make_policy(name: PolicyName, capacity_bytes: int) -> EvictionPolicy:
    """Build the policy called ``name`` (``"lru"`` or ``"tinylfu"``)."""
    if name == "lru":
        return LRUPolicy(capacity_bytes)
    if name == "tinylfu":
        return WTinyLFUPolicy(capacity_bytes)
    raise ValueError(f"unknown eviction policy {name!r}; expected 'lru' or 'tinylfu'")
