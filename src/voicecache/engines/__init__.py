"""Upstream TTS engines: the small `Engine` base class every engine implements, and
`build_engines`, which builds the configured ones through the entry-point group
`voicecache.engines` (built-in kinds and third-party plugins alike; see `registry.py`).

What a plugin needs is all here: `Engine`, `EngineSpec`, `SynthesisJob`, `VoiceInfo`,
`Reference` and `Audio` (from `voicecache.codecs`).
"""

from __future__ import annotations

from voicecache.engines.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    EngineFactory,
    EngineRegistry,
    build_engines,
)
from voicecache.engines.resilience import ResilienceConfig, ResilientEngine
from voicecache.engines.spec import EngineSpec
from voicecache.model import Engine, Reference, SynthesisJob, VoiceInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Engine",
    "EngineFactory",
    "EngineRegistry",
    "EngineSpec",
    "Reference",
    "ResilienceConfig",
    "ResilientEngine",
    "SynthesisJob",
    "VoiceInfo",
    "build_engines",
]
