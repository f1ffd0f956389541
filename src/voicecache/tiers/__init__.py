"""Cache tiers behind one protocol, and `build_tiers`, which makes them from settings.

Tier names in `VOICECACHE_TIERS` are ordered fastest first. New tiers register a builder in
`TIER_BUILDERS`; builders import their backend lazily so the embedded default needs no
Redis or S3 client.
"""

from __future__ import annotations

from collections.abc import Callable

from voicecache.config import Settings
from voicecache.errors import ConfigError
from voicecache.tiers.base import Entry, EntryMeta, Tier, TierStats
from voicecache.tiers.disk import DiskTier
from voicecache.tiers.memory import MemoryTier
from voicecache.tiers.tiered import Lookup, TieredCache

__all__ = [
    "TIER_BUILDERS",
    "DiskTier",
    "Entry",
    "EntryMeta",
    "Lookup",
    "MemoryTier",
    "Tier",
    "TierStats",
    "TieredCache",
    "build_tiers",
]


def _memory(settings: Settings) -> Tier:
    return MemoryTier(settings.memory_bytes, settings.memory_policy)


def _disk(settings: Settings) -> Tier:
    return DiskTier(settings.cache_dir, settings.disk_bytes)


TIER_BUILDERS: dict[str, Callable[[Settings], Tier]] = {"memory": _memory, "disk": _disk}


def build_tiers(settings: Settings) -> list[Tier]:
    """The tiers named in `settings.tiers`, in order."""
    tiers: list[Tier] = []
    for name in settings.tiers:
        builder = TIER_BUILDERS.get(name)
        if builder is None:
            raise ConfigError(
                f"unknown tier {name!r}; known tiers: {', '.join(sorted(TIER_BUILDERS))}"
            )
        tiers.append(builder(settings))
    return tiers
