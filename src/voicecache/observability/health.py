"""Health and readiness of one process: what `/healthz` and `/readyz` answer.

Health (`health`) is passive and instant: every tier and engine with the state of its circuit
breaker (`closed`, `open`, `half_open`; `ok` for parts without one, such as the memory tier or
the embedded engine). A part whose breaker is not closed is failing, and the status is then
`degraded`: the process still answers (hits, other tiers, stale audio), so liveness holds.

Readiness (`readiness`) asks whether this process can answer speech at all: some tier can
serve, or else the default engine can be reached. Tiers in this process or on this host
(memory, disk) always can; a remote tier can unless its breaker is open or its `check()`
(Redis PING, S3 bucket access) fails; the engine can unless its breaker is open or its
`probe()` fails. It is the default engine that counts because it is the one requests use
unless they name another: the embedded eSpeak engine is always configured too, so "any
engine" would always be true. The engine is probed only when no tier can serve, so a ready
server does not send its engine a request per readiness check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voicecache.cache.service import Gateway
from voicecache.circuit import STATES

# A readiness probe must answer before the orchestrator gives up on it (Kubernetes: 1 s).
PROBE_TIMEOUT = 0.8


def breaker_state(part: object) -> str:
    """The circuit state of a tier (`.breaker`) or a resilient engine (`.state`), or `ok`."""
    breaker = getattr(part, "breaker", None)
    state = getattr(breaker if breaker is not None else part, "state", None)
    return state if state in STATES else "ok"


def failing(state: str) -> bool:
    """A breaker that is open, or half open (probing after being open)."""
    return state in ("open", "half_open")


def health(gateway: Gateway) -> dict[str, Any]:
    """The `/healthz` body: status `ok` or `degraded`, the failing parts, every part's state."""
    tiers = {tier.name: breaker_state(tier) for tier in gateway.cache.tiers}
    engines = {name: breaker_state(engine) for name, engine in gateway.engines.items()}
    bad = [
        {"kind": kind, "name": name, "state": state}
        for kind, states in (("tier", tiers), ("engine", engines))
        for name, state in states.items()
        if failing(state)
    ]
    return {
        "status": "degraded" if bad else "ok",
        "failing": bad,
        "default_engine": gateway.default_engine,
        "engines": {
            name: {"model_version": engine.model_version, "state": engines[name]}
            for name, engine in gateway.engines.items()
        },
        "tiers": {name: {"state": state} for name, state in tiers.items()},
    }


@dataclass(slots=True)
class Readiness:
    """Which tiers can serve and, when none can, whether the default engine can be reached."""

    tiers: dict[str, bool]
    engines: dict[str, bool] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return any(self.tiers.values()) or any(self.engines.values())

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "tiers": self.tiers, "engines": self.engines}


async def _passes(part: object, check: Callable[[], Awaitable[Any]] | None) -> bool:
    if breaker_state(part) == "open":
        return False
    if check is None:
        return True
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await check()
    except Exception:  # any failure of a probe means "not now"; health shows the breakers
        return False
    return True


async def readiness(gateway: Gateway) -> Readiness:
    """Probe the tiers concurrently, and the default engine when no tier can serve."""
    tiers = gateway.cache.tiers
    served = await asyncio.gather(*(_passes(t, getattr(t, "check", None)) for t in tiers))
    result = Readiness({tier.name: ok for tier, ok in zip(tiers, served, strict=True)})
    if not result.ready:
        engine = gateway.engines[gateway.default_engine]
        result.engines = {engine.name: await _passes(engine, engine.probe)}
    return result
