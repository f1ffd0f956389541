"""Tier and engine state for Prometheus and the dashboard, read when someone looks.

`read_state` takes a `StateSnapshot` of the gateway's tiers (their `TierStats`) and engines
(breaker states and the plain counters a `ResilientEngine` keeps); `state_samples` flattens it
into `(family, label values, value)` samples and `state_families` builds the metric families,
all of them, in a fixed order, from the one table below. The hit path pays nothing for any of
this: nothing here runs per request.

With several worker processes each one publishes its samples and the scraping worker adds
them up (`observability/multiprocess.py`), by one rule: a sum (evictions, errors, breaker
states counted as "workers in this state", engine counters, the memory tier each worker
holds), except the size of a store every worker shares (disk, Redis, S3), which every worker
reports alike and which is taken once (the largest report).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from voicecache.cache.service import Gateway
from voicecache.circuit import STATES
from voicecache.model import TierStats

# (family, label values in the order of the family's labels, value)
Sample = tuple[str, tuple[str, ...], float]

# Every state family: kind, help, labels. Order here is the order of the exposition.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "voicecache_tier_bytes": ("gauge", "Bytes stored in a tier", ("tier",)),
    "voicecache_tier_entries": ("gauge", "Entries stored in a tier", ("tier",)),
    "voicecache_tier_capacity_bytes": ("gauge", "Byte budget of a tier", ("tier",)),
    "voicecache_evictions": ("counter", "Entries evicted to make room", ("tier",)),
    "voicecache_tier_errors": (
        "counter",
        "Tier operations that failed (served as misses)",
        ("tier",),
    ),
    "voicecache_engine_circuit_state": (
        "gauge",
        "Processes whose circuit breaker for an engine is in this state (closed, open, "
        "half_open): 1 for the current state of a single process",
        ("engine", "state"),
    ),
    "voicecache_tier_circuit_state": (
        "gauge",
        "Processes whose circuit breaker for a remote tier is in this state (closed, open, "
        "half_open): 1 for the current state of a single process",
        ("tier", "state"),
    ),
    "voicecache_pinned_rejected": (
        "counter",
        "Pinned entries stored unpinned because the pinned budget was full",
        ("tier",),
    ),
    "voicecache_engine_attempts": ("counter", "Upstream attempts, retries included", ("engine",)),
    "voicecache_engine_retries": ("counter", "Attempts that were retries", ("engine",)),
    "voicecache_engine_failures": ("counter", "Attempts that failed", ("engine",)),
    "voicecache_engine_timeouts": ("counter", "Attempts that timed out", ("engine",)),
    "voicecache_engine_in_flight": ("gauge", "Engine calls running upstream now", ("engine",)),
    "voicecache_engine_queued": (
        "gauge",
        "Engine calls waiting for a concurrency slot",
        ("engine",),
    ),
    "voicecache_engine_rejected": (
        "counter",
        "Engine calls refused before reaching the engine (open circuit, full queue)",
        ("engine", "reason"),
    ),
    "voicecache_engine_breaker_transitions": (
        "counter",
        "Circuit-breaker state changes of an engine",
        ("engine", "state"),
    ),
}
# Sizes of a store: per process for the memory tier, one shared store for the others.
_SIZES = frozenset(
    {"voicecache_tier_bytes", "voicecache_tier_entries", "voicecache_tier_capacity_bytes"}
)
PER_PROCESS_TIERS = frozenset({"memory"})
# Plain attributes a resilient engine keeps (see `engines/resilience.py`).
_ENGINE_ATTRIBUTES = ("attempts", "retries", "failures", "timeouts", "in_flight", "queued")


@dataclass(slots=True)
class StateSnapshot:
    """Tier and engine state at one moment."""

    tiers: list[TierStats] = field(default_factory=list)
    tier_errors: dict[str, int] = field(default_factory=dict)
    tier_circuits: dict[str, str] = field(default_factory=dict)
    engine_states: dict[str, str] = field(default_factory=dict)
    # Resilience counters of engines that keep them: name -> attribute -> value.
    engine_counters: dict[str, dict[str, Any]] = field(default_factory=dict)


def _state(value: object) -> str | None:
    return value if value in STATES else None


class StateReader:
    """Reads `StateSnapshot`s. Remote tiers count by listing (a Redis SCAN, an S3 listing), so
    their stats are kept for 50 times as long as reading them took: seconds for a large
    bucket, however often someone looks. Local tiers (memory, disk: no breaker) are read
    every time: their counts are cheap, and a read that was slow only because the disk
    tier's thread was busy must not freeze its numbers for many seconds."""

    def __init__(self) -> None:
        self._tier_stats: dict[str, tuple[float, TierStats]] = {}

    async def read(self, gateway: Gateway) -> StateSnapshot:
        tiers: list[TierStats] = []
        circuits: dict[str, str] = {}
        for tier in gateway.cache.tiers:
            breaker = getattr(tier, "breaker", None)
            cached = self._tier_stats.get(tier.name)
            now = time.monotonic()
            if cached is not None and now < cached[0]:
                stats = cached[1]
            else:
                try:
                    stats = await tier.stats()
                except Exception:  # a dead tier still gets its error counter exposed
                    stats = TierStats(name=tier.name)
                if breaker is not None:
                    self._tier_stats[tier.name] = (now + (time.monotonic() - now) * 50, stats)
            tiers.append(stats)
            # Read live: a breaker changes state between two listings of a large store.
            state = _state(getattr(breaker, "state", None) or stats.extra.get("circuit"))
            if state is not None:
                circuits[tier.name] = state
        engine_states: dict[str, str] = {}
        engine_counters: dict[str, dict[str, Any]] = {}
        for name, engine in gateway.engines.items():
            state = _state(getattr(engine, "state", None))
            if state is not None:
                engine_states[name] = state
            counters = {
                attribute: getattr(engine, attribute)
                for attribute in (*_ENGINE_ATTRIBUTES, "rejected_open", "rejected_queue",
                                  "breaker_transitions")
                if hasattr(engine, attribute)
            }  # fmt: skip
            if counters:
                engine_counters[name] = counters
        return StateSnapshot(
            tiers=tiers,
            tier_errors=dict(gateway.cache.errors),
            tier_circuits=circuits,
            engine_states=engine_states,
            engine_counters=engine_counters,
        )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def state_samples(snap: StateSnapshot) -> list[Sample]:
    """Every sample of `snap`."""
    samples: list[Sample] = []
    for stats in snap.tiers:
        tier = (stats.name,)
        samples.append(("voicecache_tier_bytes", tier, stats.bytes))
        samples.append(("voicecache_tier_entries", tier, stats.entries))
        if stats.capacity_bytes is not None:
            samples.append(("voicecache_tier_capacity_bytes", tier, stats.capacity_bytes))
        samples.append(("voicecache_evictions", tier, stats.evictions))
        failed = max(stats.errors, snap.tier_errors.get(stats.name, 0))
        samples.append(("voicecache_tier_errors", tier, failed))
        if _number(stats.extra.get("pinned_rejected")):
            samples.append(("voicecache_pinned_rejected", tier, stats.extra["pinned_rejected"]))
    for kind, states in (("engine", snap.engine_states), ("tier", snap.tier_circuits)):
        for name, state in states.items():
            for candidate in STATES:
                family = f"voicecache_{kind}_circuit_state"
                samples.append((family, (name, candidate), float(candidate == state)))
    for engine, counters in snap.engine_counters.items():
        for attribute in _ENGINE_ATTRIBUTES:
            if _number(counters.get(attribute)):
                samples.append((f"voicecache_engine_{attribute}", (engine,), counters[attribute]))
        for reason in ("open", "queue"):
            if _number(counters.get(f"rejected_{reason}")):
                value = counters[f"rejected_{reason}"]
                samples.append(("voicecache_engine_rejected", (engine, reason), value))
        changes = counters.get("breaker_transitions")
        if isinstance(changes, dict):
            for state, count in changes.items():
                samples.append(("voicecache_engine_breaker_transitions", (engine, state), count))
    return samples


def combine(samples: Iterable[Sample]) -> list[Sample]:
    """Samples of several processes as one: summed, except the size of a shared store (the
    same in every report), which is taken once."""
    combined: dict[tuple[str, tuple[str, ...]], float] = {}
    for name, labels, value in samples:
        key = (name, labels)
        if key not in combined:
            combined[key] = value
        elif name in _SIZES and labels[0] not in PER_PROCESS_TIERS:
            combined[key] = max(combined[key], value)
        else:
            combined[key] += value
    return [(name, labels, value) for (name, labels), value in combined.items()]


def state_families(samples: Iterable[Sample]) -> list[Metric]:
    """Every state family (empty ones too, so the set of metrics never depends on traffic)."""
    families: dict[str, Metric] = {}
    for name, (kind, help_text, labels) in FAMILIES.items():
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        families[name] = family_type(name, help_text, labels=list(labels))
    for name, labels, value in samples:
        family = families[name]
        assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
        family.add_metric(list(labels), value)
    return list(families.values())


def tier_rows(samples: Iterable[Sample]) -> list[dict[str, Any]]:
    """One row per tier (name, entries, bytes, capacity_bytes, evictions, errors)."""
    columns = {
        "voicecache_tier_entries": "entries",
        "voicecache_tier_bytes": "bytes",
        "voicecache_tier_capacity_bytes": "capacity_bytes",
        "voicecache_evictions": "evictions",
        "voicecache_tier_errors": "errors",
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, labels, value in samples:
        if name in columns:
            row = rows.setdefault(labels[0], {"name": labels[0], "capacity_bytes": None})
            row[columns[name]] = int(value)
    return list(rows.values())


def engine_states(samples: Iterable[Sample]) -> dict[str, dict[str, Any]]:
    """Per engine with a breaker: `state`, the worst state any process is in (open, then
    half_open, then closed), and `processes`, how many processes are in each state."""
    counts: dict[str, dict[str, int]] = {}
    for name, labels, value in samples:
        if name == "voicecache_engine_circuit_state" and value:
            counts.setdefault(labels[0], {})[labels[1]] = int(value)
    worst = ("open", "half_open", "closed")
    return {
        engine: {"state": next(s for s in worst if s in per), "processes": per}
        for engine, per in counts.items()
    }
