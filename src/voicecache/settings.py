"""Settings: one `Settings` object, read from `VOICECACHE_*` environment variables and an
optional TOML file.

Precedence, highest first: keyword arguments (tests, CLI flags) → environment → TOML file →
defaults. The TOML file is named by `--config` on the CLI or `VOICECACHE_CONFIG`; its top-level
keys are the setting names in lower case (`memory_bytes = 1_000_000`), and tables hold the
structured settings (`[[ttl_rules]]`, `[[templates]]`, `[engines.NAME]`, `[emotion_prompts]`).

Settings are parsed once at the edge (`create_app(settings)`, the CLI) and plain values are
passed inward; nothing below this module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voicecache.cache.policy import TtlRule
from voicecache.keys import Normalization
from voicecache.model import SegmentMode
from voicecache.units import parse_duration, parse_size

StorageCodec = Literal["flac", "wav", "opus", "mp3"]


class EngineConfig(BaseModel):
    """One named upstream engine (`[engines.NAME]` in TOML)."""

    kind: str  # an entry point of `voicecache.engines`: espeak, emotivoice, openai or a plugin's
    url: str | None = None
    api_key: str | None = None
    model: str | None = None
    model_version: str | None = None
    timeout: float = 30.0
    connect_timeout: float = 5.0
    max_concurrency: int = 4
    max_queue: int = 100
    retries: int = 3
    retry_base_delay: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    segments: SegmentMode | None = None  # None: VOICECACHE_SEGMENTS decides
    options: dict[str, Any] = Field(default_factory=dict)


class TemplateConfig(BaseModel):
    """One `[[templates]]` entry: a personalized line's pattern and optional conditions."""

    pattern: str
    voice: str | None = None
    engine: str | None = None
    emotion: str | None = None


class Settings(BaseSettings):
    """Every knob of voicecache. Environment variables are `VOICECACHE_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="VOICECACHE_", extra="ignore", validate_default=True
    )

    # -- serving ---------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: Path = Path("./.voicecache")
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024  # request line + headers; over it: 431, connection closed
    client_timeout: float = 30.0
    # Answer plain memory hits in the HTTP protocol, below ASGI (http/protocol.py); off: every
    # request goes through ASGI (the fast lane middleware still answers hits there).
    wire_hits: bool = True

    # -- requests ----------------------------------------------------------------------------
    normalization: Normalization = "standard"
    max_text_chars: int = 4000
    default_voice: str = "en"

    # -- segments and templates --------------------------------------------------------------
    segments: SegmentMode = "off"
    segment_min_chars: Annotated[int, Field(ge=1)] = 6
    segment_max_chars: Annotated[int, Field(ge=1)] = 150
    segment_pause: float = 0.12
    segment_comma_pause: float = 0.06
    templates: list[TemplateConfig] = Field(default_factory=list)

    # -- engines ---------------------------------------------------------------------------
    engine: str = "espeak"
    engines: dict[str, EngineConfig] = Field(default_factory=dict)
    espeak_model_version: str = "espeak-ng-1.52"
    emotivoice_url: str | None = None
    emotivoice_model_version: str = "emotivoice-1"
    emotivoice_timeout: float = 60.0
    emotivoice_max_concurrency: int = 2
    emotivoice_derive_speed: bool = False
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str = "tts-1"
    openai_model_version: str = "tts-1"
    openai_timeout: float = 60.0
    openai_max_concurrency: int = 8
    emotion_prompts: dict[str, str] = Field(default_factory=dict)
    engine_retries: int = 3
    engine_retry_base_delay: float = 1.0
    engine_max_queue: int = 100
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0

    # -- cache tiers -------------------------------------------------------------------------
    tiers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["memory", "disk"])
    memory_bytes: int = 256 * 1024 * 1024
    memory_policy: Literal["lru", "tinylfu"] = "tinylfu"
    disk_bytes: int = 2 * 1024 * 1024 * 1024
    # Budget of pinned entries in each of the memory and disk tiers (default: half of each);
    # a pinned entry past it is stored unpinned, so it can be evicted.
    pinned_bytes: int | None = None
    disk_policy: Literal["lru", "fifo"] = "lru"  # fifo: least recently stored
    disk_io_threads: int = 4  # threads of the disk tier's file and index work
    storage_codec: StorageCodec = "flac"
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_prefix: str = "vc"
    redis_timeout: float = 0.25
    redis_breaker_cooldown: float = 5.0
    s3_bucket: str | None = None
    s3_prefix: str = "voicecache"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_sweep_rps: float = Field(default=100.0, gt=0)  # S3 requests per second of a listing pass
    lock_ttl: float = 30.0
    lock_wait: float = 35.0

    # -- policy ----------------------------------------------------------------------------
    default_ttl: float = 30 * 86400
    grace: float = 86400
    stale_while_revalidate: bool = False
    ttl_rules: list[TtlRule] = Field(default_factory=list)
    popularity_hits: int = 10
    popularity_factor: float = 2.0
    sweep_interval: float = 300.0
    purge_poll_interval: float = 1.0

    # -- voices and security ---------------------------------------------------------------
    master_key: str | None = None
    master_key_file: Path | None = None
    master_key_previous: str | None = None  # during `keys rotate`: the old key, still readable
    keys_file: Path | None = None
    allow_anonymous: bool = False
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_seconds: float = 60.0
    rate_limit_rps: float = 0.0
    rate_limit_chars_per_minute: int = 0
    audit_log: Path | None = None
    public_audio: bool = False  # let shared caches (CDNs) keep audio fetched with an API key

    # -- observability ---------------------------------------------------------------------
    price_per_million_chars: float = 15.0

    @field_validator(
        "default_ttl",
        "grace",
        "sweep_interval",
        "purge_poll_interval",
        "redis_timeout",
        "redis_breaker_cooldown",
        "lock_ttl",
        "lock_wait",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("segment_pause", "segment_comma_pause", mode="before")
    @classmethod
    def _pauses(cls, value: Any) -> Any:
        seconds = parse_duration(value) if isinstance(value, str) else value
        if isinstance(seconds, int | float) and not 0 <= seconds <= 5:
            raise ValueError(f"a pause of {value!r} seconds is not 0-5 s (write e.g. 120ms)")
        return seconds

    @field_validator(
        "memory_bytes",
        "disk_bytes",
        "pinned_bytes",
        "max_upload_bytes",
        "max_body_bytes",
        "max_header_bytes",
        mode="before",
    )
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("tiers", mode="before")
    @classmethod
    def _tier_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("VOICECACHE_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> Settings:
        """Read settings, with `config_file` (TOML) below the environment."""
        if config_file is None:
            return cls(**overrides)
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        previous = os.environ.get("VOICECACHE_CONFIG")
        os.environ["VOICECACHE_CONFIG"] = str(path)
        try:
            return cls(**overrides)
        finally:
            if previous is None:
                os.environ.pop("VOICECACHE_CONFIG", None)
            else:
                os.environ["VOICECACHE_CONFIG"] = previous

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def keys_path(self) -> Path:
        """Where the API keys file is: `keys_file`, else `data_dir/keys.json`."""
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def audit_path(self) -> Path:
        """Where the audit log is: `audit_log`, else `data_dir/audit.log`."""
        return self.audit_log or self.data_dir / "audit.log"

    def engine_configs(self) -> dict[str, EngineConfig]:
        """All configured engines by name: the flat `VOICECACHE_<ENGINE>_*` settings plus
        `[engines.NAME]` tables. The embedded espeak engine is always available."""
        configs: dict[str, EngineConfig] = {
            "espeak": EngineConfig(kind="espeak", model_version=self.espeak_model_version)
        }
        if self.emotivoice_url:
            configs["emotivoice"] = EngineConfig(
                kind="emotivoice",
                url=self.emotivoice_url,
                model_version=self.emotivoice_model_version,
                timeout=self.emotivoice_timeout,
                max_concurrency=self.emotivoice_max_concurrency,
                max_queue=self.engine_max_queue,
                retries=self.engine_retries,
                retry_base_delay=self.engine_retry_base_delay,
                breaker_failures=self.breaker_failures,
                breaker_cooldown=self.breaker_cooldown,
                options={"derive_speed": self.emotivoice_derive_speed},
            )
        if self.openai_base_url:
            configs["openai"] = EngineConfig(
                kind="openai",
                url=self.openai_base_url,
                api_key=self.openai_api_key,
                model=self.openai_model,
                model_version=self.openai_model_version,
                timeout=self.openai_timeout,
                max_concurrency=self.openai_max_concurrency,
                max_queue=self.engine_max_queue,
                retries=self.engine_retries,
                retry_base_delay=self.engine_retry_base_delay,
                breaker_failures=self.breaker_failures,
                breaker_cooldown=self.breaker_cooldown,
            )
        configs.update(self.engines)
        return configs
