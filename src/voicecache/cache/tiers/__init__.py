"""Cache tiers behind one base class (`base.Tier`), fastest first: memory, disk, Redis, S3,
and `TieredCache`, which reads through them in order. `bootstrap.build_tiers` makes the
configured ones from settings; Redis and S3 are imported only when configured.
"""

from __future__ import annotations

from voicecache.cache.tiers.disk import DiskTier
from voicecache.cache.tiers.memory import MemoryTier
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.model import Entry, EntryMeta, Tier, TierStats

__all__ = [
    "DiskTier",
    "Entry",
    "EntryMeta",
    "Lookup",
    "MemoryTier",
    "Tier",
    "TierStats",
    "TieredCache",
]
