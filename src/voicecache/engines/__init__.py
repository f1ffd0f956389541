"""Upstream TTS engines behind one protocol (`base.Engine`), and `build_engines`, which makes
the configured ones from settings.

Engine kinds register a builder in `ENGINE_BUILDERS`; remote engines import their HTTP client
lazily so the embedded default starts without them, and `build_engines` wraps every engine
that is not in-process in `ResilientEngine` (timeouts, retries, breaker, back-pressure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voicecache.engines.base import Engine, Reference, SynthesisJob, VoiceInfo
from voicecache.engines.espeak import EspeakEngine
from voicecache.engines.resilience import ResilienceConfig, ResilientEngine
from voicecache.errors import ConfigError
from voicecache.settings import EngineConfig, Settings

__all__ = [
    "ENGINE_BUILDERS",
    "Engine",
    "Reference",
    "ResilientEngine",
    "SynthesisJob",
    "VoiceInfo",
    "build_engines",
]


def _espeak(name: str, config: EngineConfig, settings: Settings) -> Engine:
    return EspeakEngine(name=name, model_version=config.model_version or "espeak-ng-1.52")


def _remote_url(name: str, config: EngineConfig) -> str:
    if not config.url:
        raise ConfigError(f"engine {name!r} ({config.kind}) needs a url")
    return config.url


def _voice_list(name: str, options: dict[str, Any]) -> list[str] | None:
    voices = options.get("voices")
    if voices is None:
        return None
    if isinstance(voices, str):
        voices = [v.strip() for v in voices.split(",")]
    if not isinstance(voices, list) or not all(isinstance(v, str) for v in voices):
        raise ConfigError(f"engine {name!r}: options.voices must be a list of voice ids")
    return [v for v in voices if v] or None


def _emotivoice(name: str, config: EngineConfig, settings: Settings) -> Engine:
    from voicecache.engines.emotivoice import DEFAULT_LANGUAGE, DEFAULT_MODEL, EmotiVoiceEngine

    options = config.options
    upstream_format = options.get("upstream_format", "wav")
    if upstream_format not in ("wav", "flac", "mp3"):
        raise ConfigError(f"engine {name!r}: options.upstream_format must be wav, flac or mp3")
    prompts = dict(settings.emotion_prompts)
    prompts.update(options.get("emotion_prompts") or {})
    return EmotiVoiceEngine(
        name=name,
        url=_remote_url(name, config),
        model_version=config.model_version or settings.emotivoice_model_version,
        model=config.model or DEFAULT_MODEL,
        language=str(options.get("language", DEFAULT_LANGUAGE)),
        emotion_prompts=prompts,
        voices=_voice_list(name, options),
        derive_speed=bool(options.get("derive_speed", False)),
        upstream_format=upstream_format,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        max_connections=config.max_concurrency,
    )


def _openai(name: str, config: EngineConfig, settings: Settings) -> Engine:
    from voicecache.engines.openai import OpenAIEngine

    options = config.options
    upstream_format = options.get("upstream_format", "wav")
    if upstream_format not in ("wav", "flac"):
        raise ConfigError(f"engine {name!r}: options.upstream_format must be wav or flac")
    model = config.model or settings.openai_model
    return OpenAIEngine(
        name=name,
        base_url=_remote_url(name, config),
        api_key=config.api_key,
        model=model,
        model_version=config.model_version or model,
        voices=_voice_list(name, options),
        emotion_instructions=options.get("emotion_instructions") or None,
        upstream_format=upstream_format,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        max_connections=config.max_concurrency,
    )


# Kinds that run inside this process: no network to fail, so no retries or breaker (eSpeak
# already serializes its calls on one thread).
IN_PROCESS_KINDS = frozenset({"espeak"})

ENGINE_BUILDERS: dict[str, Callable[[str, EngineConfig, Settings], Engine]] = {
    "espeak": _espeak,
    "emotivoice": _emotivoice,
    "openai": _openai,
}


_URL_SETTINGS = {
    "emotivoice": "VOICECACHE_EMOTIVOICE_URL",
    "openai": "VOICECACHE_OPENAI_BASE_URL",
}


def build_engines(settings: Settings) -> dict[str, Engine]:
    """Every configured engine by name."""
    engines: dict[str, Engine] = {}
    for name, config in settings.engine_configs().items():
        builder = ENGINE_BUILDERS.get(config.kind)
        if builder is None:
            raise ConfigError(f"engine {name!r}: unknown kind {config.kind!r}")
        engine = builder(name, config, settings)
        if config.kind not in IN_PROCESS_KINDS:
            # Every call to a remote engine goes through the one resilience layer.
            engine = ResilientEngine(engine, ResilienceConfig.from_engine_config(config))
        engines[name] = engine
    if settings.engine not in engines:
        hint = _URL_SETTINGS.get(settings.engine)
        raise ConfigError(
            f"VOICECACHE_ENGINE={settings.engine!r} is not configured"
            + (f" (set {hint})" if hint else "")
            + f"; configured engines: {', '.join(sorted(engines))}"
        )
    return engines
