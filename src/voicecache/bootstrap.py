"""The composition root: `build(settings)` constructs every part of voicecache exactly once.

Settings are read here (and at the edges: the HTTP app, the CLI), never below: every other
module receives plain values and the parts it works with. The HTTP app and the CLI both build
through `build`, so a line warmed from the CLI and a line served over HTTP go through the same
core and land in the same cache.

What is built, bottom up: engines, tiers, the tiered cache and its policy, the voice registry,
rate limits, the cross-replica fill lock, the purge feed (attached to the cache, so every purge
is announced), the sweeper and purge follower (started only by a server), API keys, the
authenticator, the audit log and the metrics. Tiers and clients open lazily on first use.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from voicecache.cache.invalidation.feed import PurgeFollower, attach
from voicecache.cache.invalidation.maintenance import Maintenance
from voicecache.cache.invalidation.sweeper import Sweeper
from voicecache.cache.policy import Policy
from voicecache.cache.segments import SegmentConfig, SegmentSpeaker, Template
from voicecache.cache.service import Gateway
from voicecache.cache.tiers import DiskTier, MemoryTier, Tier, TieredCache
from voicecache.cluster.fill_lock import RedisFillLock
from voicecache.cluster.purge_feed import build_feed
from voicecache.cluster.redis import RedisHandle
from voicecache.engines import EngineSpec, build_engines
from voicecache.errors import ConfigError
from voicecache.observability.metrics import Metrics
from voicecache.observability.multiprocess import MultiprocessMetrics
from voicecache.security.audit import AuditLog
from voicecache.security.auth import Authenticator, KeyStore
from voicecache.security.exposure import is_loopback
from voicecache.security.ratelimit import RateLimits
from voicecache.settings import Settings
from voicecache.voices.crypto import Keyring
from voicecache.voices.registry import VoiceRegistry, VoiceStore

if TYPE_CHECKING:  # redis-py is imported only when Redis is configured
    from voicecache.cluster.fill_lock import RedisFillLock
    from voicecache.cluster.redis import RedisHandle

Clock = Callable[[], float]


@dataclass
class Services:
    """Every part of one voicecache process, built once by `build`.

    The HTTP app keeps it as `app.state.services` (read through `http/state.py`); CLI commands
    get it from `open_services`. `start` runs the background work a server needs; `aclose`
    closes everything that holds connections, files or tasks.
    """

    settings: Settings
    gateway: Gateway
    voices: VoiceRegistry
    metrics: Metrics
    keys: KeyStore
    authenticator: Authenticator
    audit: AuditLog
    rate_limits: RateLimits | None
    maintenance: Maintenance
    redis: RedisHandle | None = None

    def start(self) -> None:
        """Start the sweeper, the purge follower and the metrics publisher (several workers)
        in the running event loop (servers only)."""
        self.maintenance.start()
        self.metrics.start(self.gateway)

    async def aclose(self) -> None:
        await self.metrics.aclose()
        await self.maintenance.stop()
        await self.gateway.aclose()
        if self.redis is not None:  # last: the tier, lock, feed and counters share it
            await self.redis.aclose()


def build(
    settings: Settings, *, clock: Clock = time.time, metrics_dir: Path | None = None
) -> Services:
    """Every part for `settings`, wired together; nothing connects until first use.

    `metrics_dir`: count in prometheus-client's multiprocess files there, shared with the
    other worker processes of one server (`observability/multiprocess.py`)."""
    redis = build_redis(settings)
    cache = TieredCache(build_tiers(settings, redis), clock=clock)
    voices = build_voices(settings, clock)
    rate_limits = build_rate_limits(settings, redis)
    metrics = (
        Metrics(price_per_million_chars=settings.price_per_million_chars)
        if metrics_dir is None
        else MultiprocessMetrics(
            metrics_dir, price_per_million_chars=settings.price_per_million_chars
        )
    )
    specs = engine_specs(settings)
    gateway = Gateway(
        engines=build_engines(specs, default=settings.engine),
        default_engine=settings.engine,
        cache=cache,
        policy=Policy(
            default_ttl=settings.default_ttl,
            grace=settings.grace,
            rules=settings.ttl_rules,
            popularity_hits=settings.popularity_hits,
            popularity_factor=settings.popularity_factor,
            clock=clock,
        ),
        voices=voices,
        admission=rate_limits,
        storage_codec=settings.storage_codec,
        observer=metrics,
        clock=clock,
        fill_lock=build_fill_lock(settings, redis),
        stale_while_revalidate=settings.stale_while_revalidate,
        segments=SegmentSpeaker(segment_config(settings, specs)),
    )
    # Every purge of this cache (admin API, CLI, voice erasure) is announced to the other
    # processes on the host (file) and, with Redis, to every replica.
    feed = attach(cache, build_feed(settings.data_dir, redis))
    maintenance = Maintenance(
        gateway,
        Sweeper.for_gateway(gateway, settings.sweep_interval, settings.data_dir, redis),
        PurgeFollower(cache, feed, settings.purge_poll_interval),
    )
    keys = KeyStore(settings.keys_path)
    return Services(
        settings=settings,
        gateway=gateway,
        voices=voices,
        metrics=metrics,
        keys=keys,
        authenticator=Authenticator(
            keys, allow_anonymous=settings.allow_anonymous, public=not is_loopback(settings.host)
        ),
        audit=AuditLog(settings.audit_path),
        rate_limits=rate_limits,
        maintenance=maintenance,
        redis=redis,
    )


def build_redis(settings: Settings) -> RedisHandle | None:
    """The process's one Redis handle, when `redis_url` is set (clients connect lazily)."""
    if not settings.redis_url:
        if "redis" in settings.tiers:
            raise ConfigError("tier 'redis' needs VOICECACHE_REDIS_URL (redis://host:6379/0)")
        return None
    from voicecache.cluster.redis import RedisHandle

    return RedisHandle.from_url(
        settings.redis_url,
        cluster=settings.redis_cluster,
        prefix=settings.redis_prefix,
        timeout=settings.redis_timeout,
        breaker_cooldown=settings.redis_breaker_cooldown,
    )


@asynccontextmanager
async def open_services(settings: Settings, *, clock: Clock = time.time) -> AsyncIterator[Services]:
    """The parts for one CLI command: built from `settings`, closed however the command ends."""
    services = build(settings, clock=clock)
    try:
        yield services
    finally:
        await services.aclose()


# -- tiers -------------------------------------------------------------------------------------


def _memory(settings: Settings, redis: RedisHandle | None) -> Tier:
    return MemoryTier(
        settings.memory_bytes, settings.memory_policy, pinned_bytes=settings.pinned_bytes
    )


def _disk(settings: Settings, redis: RedisHandle | None) -> Tier:
    return DiskTier(
        settings.cache_dir,
        settings.disk_bytes,
        pinned_bytes=settings.pinned_bytes,
        policy=settings.disk_policy,
        io_threads=settings.disk_io_threads,
    )


def _redis(settings: Settings, redis: RedisHandle | None) -> Tier:
    from voicecache.cache.tiers.redis import RedisTier

    if redis is None:
        raise ConfigError("tier 'redis' needs VOICECACHE_REDIS_URL (redis://host:6379/0)")
    return RedisTier(redis)


def _s3(settings: Settings, redis: RedisHandle | None) -> Tier:
    from voicecache.cache.tiers.s3 import S3Tier

    if not settings.s3_bucket:
        raise ConfigError("tier 's3' needs VOICECACHE_S3_BUCKET")
    return S3Tier(
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        redis=redis,  # the bucket's index, when Redis is configured
        requests_per_second=settings.s3_sweep_rps,
        # A sweep without an index reads headers for at most half the interval, then resumes.
        sweep_budget=max(100, int(settings.s3_sweep_rps * settings.sweep_interval / 2)),
    )


# Tier names in `VOICECACHE_TIERS`, fastest first; remote backends are imported lazily so the
# embedded default needs no Redis or S3 client.
TIER_BUILDERS: dict[str, Callable[[Settings, RedisHandle | None], Tier]] = {
    "memory": _memory,
    "disk": _disk,
    "redis": _redis,
    "s3": _s3,
}


def build_tiers(settings: Settings, redis: RedisHandle | None = None) -> list[Tier]:
    """The tiers named in `settings.tiers`, in order (the Redis tier on the shared handle)."""
    tiers: list[Tier] = []
    for name in settings.tiers:
        builder = TIER_BUILDERS.get(name)
        if builder is None:
            raise ConfigError(
                f"unknown tier {name!r}; known tiers: {', '.join(sorted(TIER_BUILDERS))}"
            )
        tiers.append(builder(settings, redis))
    return tiers


# -- engines: settings → EngineSpec -------------------------------------------------------------
# The engines package never reads settings; this is where `[engines.NAME]` tables and the flat
# `VOICECACHE_<ENGINE>_*` settings become the specs their factories get.

# What to set when the default engine is one of the built-in remote kinds and not configured.
_URL_SETTINGS = {
    "emotivoice": "VOICECACHE_EMOTIVOICE_URL",
    "openai": "VOICECACHE_OPENAI_BASE_URL",
}


def engine_specs(settings: Settings) -> dict[str, EngineSpec]:
    """Every configured engine's spec by name; `settings.engine` must be among them."""
    configs = settings.engine_configs()
    if settings.engine not in configs:
        hint = _URL_SETTINGS.get(settings.engine)
        raise ConfigError(
            f"VOICECACHE_ENGINE={settings.engine!r} is not configured"
            + (f" (set {hint})" if hint else "")
            + f"; configured engines: {', '.join(sorted(configs))}"
        )
    specs: dict[str, EngineSpec] = {}
    for name, config in configs.items():
        options = dict(config.options)
        model, model_version = config.model, config.model_version
        # Global settings that today apply to every engine of a built-in kind.
        if config.kind == "emotivoice":
            options["emotion_prompts"] = {
                **settings.emotion_prompts,
                **(options.get("emotion_prompts") or {}),
            }
            model_version = model_version or settings.emotivoice_model_version
        elif config.kind == "openai":
            model = model or settings.openai_model
        specs[name] = EngineSpec(
            name=name,
            kind=config.kind,
            url=config.url,
            api_key=config.api_key,
            model=model,
            model_version=model_version,
            timeout=config.timeout,
            connect_timeout=config.connect_timeout,
            max_concurrency=config.max_concurrency,
            options=options,
            max_queue=config.max_queue,
            retries=config.retries,
            retry_base_delay=config.retry_base_delay,
            breaker_failures=config.breaker_failures,
            breaker_cooldown=config.breaker_cooldown,
        )
    return specs


# -- the rest ----------------------------------------------------------------------------------


def build_fill_lock(settings: Settings, redis: RedisHandle | None) -> RedisFillLock | None:
    """The cross-replica fill lock, when replicas share a Redis tier: one replica calls the
    engine for a line, the others wait for what it stores."""
    if redis is None or "redis" not in settings.tiers:
        return None
    from voicecache.cluster.fill_lock import RedisFillLock

    return RedisFillLock(redis, settings.lock_ttl, settings.lock_wait)


def segment_config(settings: Settings, specs: dict[str, EngineSpec]) -> SegmentConfig:
    """Segments and templates: `VOICECACHE_SEGMENT*`, `segments` per engine, `[[templates]]`
    (each compiled here, so a pattern that cannot work stops the start with its reason)."""
    configs = settings.engine_configs()
    return SegmentConfig(
        mode=settings.segments,
        engine_modes={name: config.segments for name, config in configs.items() if config.segments},
        min_chars=settings.segment_min_chars,
        max_chars=settings.segment_max_chars,
        pause=settings.segment_pause,
        comma_pause=settings.segment_comma_pause,
        templates=tuple(
            Template.compile(
                template.pattern,
                normalization=settings.normalization,
                voice=template.voice,
                engine=template.engine,
                emotion=template.emotion,
            )
            for template in settings.templates
        ),
        concurrency={name: spec.max_concurrency for name, spec in specs.items()},
    )


def build_voices(settings: Settings, clock: Clock = time.time) -> VoiceRegistry:
    """The voice registry: samples encrypted under the master key in `data_dir/voices/`."""
    store = VoiceStore(
        settings.data_dir / "voices",
        Keyring.load(settings.master_key, settings.master_key_file, settings.master_key_previous),
        max_upload_bytes=settings.max_upload_bytes,
        max_upload_seconds=settings.max_upload_seconds,
        clock=clock,
    )
    return VoiceRegistry(store, default_voice=settings.default_voice)


def build_rate_limits(settings: Settings, redis: RedisHandle | None) -> RateLimits | None:
    """The limits of `settings`, counted in Redis when it is shared (in-process while Redis
    fails); None when no limit is configured."""
    if settings.rate_limit_rps <= 0 and settings.rate_limit_chars_per_minute <= 0:
        return None
    shared = None
    if redis is not None:
        from voicecache.cluster.rate_counters import SharedCounters

        shared = SharedCounters(redis)
    return RateLimits(settings.rate_limit_rps, settings.rate_limit_chars_per_minute, shared)
