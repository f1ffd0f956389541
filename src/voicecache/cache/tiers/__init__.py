"""Cache tiers behind one protocol, and `build_tiers`, which makes them from settings.

Tier names in `VOICECACHE_TIERS` are ordered fastest first. New tiers register a builder in
`TIER_BUILDERS`; builders import their backend lazily so the embedded default needs no
Redis or S3 client.
"""

from __future__ import annotations

from collections.abc import Callable

from voicecache.cache.tiers.base import Entry, EntryMeta, Tier, TierStats
from voicecache.cache.tiers.disk import DiskTier
from voicecache.cache.tiers.memory import MemoryTier
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.errors import ConfigError
from voicecache.settings import Settings

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


def _redis(settings: Settings) -> Tier:
    from voicecache.cache.tiers.redis import RedisTier
    from voicecache.circuit import CircuitBreaker

    if not settings.redis_url:
        raise ConfigError("tier 'redis' needs VOICECACHE_REDIS_URL (redis://host:6379/0)")
    return RedisTier(
        settings.redis_url,
        cluster=settings.redis_cluster,
        prefix=settings.redis_prefix,
        timeout=settings.redis_timeout,
        breaker=CircuitBreaker(failures=3, cooldown=settings.redis_breaker_cooldown),
    )


def _s3(settings: Settings) -> Tier:
    from voicecache.cache.tiers.s3 import S3Tier

    if not settings.s3_bucket:
        raise ConfigError("tier 's3' needs VOICECACHE_S3_BUCKET")
    return S3Tier(
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )


TIER_BUILDERS: dict[str, Callable[[Settings], Tier]] = {
    "memory": _memory,
    "disk": _disk,
    "redis": _redis,
    "s3": _s3,
}


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
