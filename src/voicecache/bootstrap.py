"""Composition: build a `Gateway` and its parts from `Settings`.

The API and the CLI both call `build_gateway`, so a line warmed from the CLI and a line served
over HTTP go through the same core and land in the same cache.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from voicecache.cache.policy import Policy
from voicecache.cache.service import Gateway
from voicecache.cache.tiers import TieredCache, build_tiers
from voicecache.engines import EngineSpec, build_engines
from voicecache.errors import ConfigError
from voicecache.observability.metrics import Metrics
from voicecache.security.ratelimit import build_rate_limits
from voicecache.settings import Settings
from voicecache.voices.crypto import Keyring
from voicecache.voices.registry import VoiceRegistry, VoiceStore


def build_gateway(settings: Settings, clock: Callable[[], float] = time.time) -> Gateway:
    """A ready gateway for `settings` (tiers open lazily on first use)."""
    engines = build_engines(engine_specs(settings), default=settings.engine)
    cache = TieredCache(build_tiers(settings), clock=clock)
    policy = Policy(
        default_ttl=settings.default_ttl,
        grace=settings.grace,
        rules=settings.ttl_rules,
        popularity_hits=settings.popularity_hits,
        popularity_factor=settings.popularity_factor,
        clock=clock,
    )
    fill_lock = None
    if "redis" in settings.tiers:  # coalesce misses across replicas sharing this Redis
        from voicecache.cluster.fill_lock import fill_lock_for

        fill_lock = fill_lock_for(cache.tiers, settings.lock_ttl, settings.lock_wait)
    return Gateway(
        engines=engines,
        default_engine=settings.engine,
        cache=cache,
        policy=policy,
        voices=build_voices(settings, clock),
        admission=build_rate_limits(settings),
        storage_codec=settings.storage_codec,
        observer=Metrics(price_per_million_chars=settings.price_per_million_chars),
        clock=clock,
        fill_lock=fill_lock,
        stale_while_revalidate=settings.stale_while_revalidate,
    )


def build_voices(settings: Settings, clock: Callable[[], float] = time.time) -> VoiceRegistry:
    """The voice registry: encrypted samples under `data_dir/voices/`."""
    store = VoiceStore(
        settings.data_dir / "voices",
        Keyring.from_settings(settings),
        max_upload_bytes=settings.max_upload_bytes,
        max_upload_seconds=settings.max_upload_seconds,
        clock=clock,
    )
    return VoiceRegistry(store, default_voice=settings.default_voice)


@asynccontextmanager
async def open_gateway(
    settings: Settings, clock: Callable[[], float] = time.time
) -> AsyncIterator[Gateway]:
    """A gateway for one CLI command: built from `settings`, closed however the command ends."""
    gateway = build_gateway(settings, clock)
    try:
        yield gateway
    finally:
        await gateway.aclose()


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
