"""Upstream TTS engines behind one protocol (`base.Engine`), and `build_engines`, which makes
the configured ones from settings.

Engine kinds register a builder in `ENGINE_BUILDERS`; remote engines import their HTTP client
lazily so the embedded default starts without them.
"""

from __future__ import annotations

from collections.abc import Callable

from voicecache.config import EngineConfig, Settings
from voicecache.engines.base import Engine, Reference, SynthesisJob, VoiceInfo
from voicecache.engines.espeak import EspeakEngine
from voicecache.errors import ConfigError

__all__ = [
    "ENGINE_BUILDERS",
    "Engine",
    "Reference",
    "SynthesisJob",
    "VoiceInfo",
    "build_engines",
]


def _espeak(name: str, config: EngineConfig, settings: Settings) -> Engine:
    return EspeakEngine(name=name, model_version=config.model_version or "espeak-ng-1.52")


ENGINE_BUILDERS: dict[str, Callable[[str, EngineConfig, Settings], Engine]] = {
    "espeak": _espeak,
}


def build_engines(settings: Settings) -> dict[str, Engine]:
    """Every configured engine by name."""
    engines: dict[str, Engine] = {}
    for name, config in settings.engine_configs().items():
        builder = ENGINE_BUILDERS.get(config.kind)
        if builder is None:
            raise ConfigError(f"engine {name!r}: unknown kind {config.kind!r}")
        engines[name] = builder(name, config, settings)
    if settings.engine not in engines:
        raise ConfigError(
            f"VOICECACHE_ENGINE={settings.engine!r} is not configured; "
            f"configured engines: {', '.join(sorted(engines))}"
        )
    return engines
