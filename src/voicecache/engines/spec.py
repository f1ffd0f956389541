"""`EngineSpec`: everything an engine factory is given to build one configured engine.

The composition root turns settings into specs (`bootstrap.engine_specs`), so engines, built-in
or third-party, never read settings. The names match the `[engines.NAME]` table of the
configuration file; `options` holds the kind-specific rest, as configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One named engine as configured. Defaults are those of an `[engines.NAME]` table."""

    name: str
    kind: str
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    model_version: str | None = None
    timeout: float = 30.0  # seconds for one upstream call
    connect_timeout: float = 5.0
    max_concurrency: int = 4  # calls running upstream at once
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Resilience of remote engines (`engines/resilience.py`); in-process engines ignore them.
    max_queue: int = 100  # calls waiting for a slot beyond `max_concurrency`
    retries: int = 3  # attempts in all: one try and two retries
    retry_base_delay: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0

    def __post_init__(self) -> None:
        # Frozen all the way down: a factory cannot change what the next one is given.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
