"""Prometheus metrics, fed by the gateway as its `GatewayObserver`.

Per request (plain counters, ~1 µs plus the dashboard's `Insights`):

    voicecache_requests_total{result="hit|miss|coalesced|stale|error",tier,engine}
    voicecache_request_seconds{result}                 histogram
    voicecache_first_byte_seconds{result}              histogram: streamed responses, from
                                                       the request's arrival to the first
                                                       audio byte written (`first_byte`)
    voicecache_engine_calls_total{engine,outcome}      outcome "ok" or the error class
    voicecache_engine_seconds{engine}                  histogram
    voicecache_characters_total{source="engine|cache"} characters synthesized vs served
    voicecache_cost_saved_total                        cache characters × price per million
    voicecache_errors_total{type}                      error answers (4xx/5xx) by error class

At scrape time, from each tier's `TierStats` and each engine's attributes (a custom
collector, so the hit path pays nothing for them):

    voicecache_tier_bytes{tier}, voicecache_tier_entries{tier},
    voicecache_tier_capacity_bytes{tier}, voicecache_evictions_total{tier},
    voicecache_tier_errors_total{tier}, voicecache_tier_circuit_state{tier,state},
    voicecache_pinned_rejected_total{tier},
    voicecache_engine_circuit_state{engine,state}, and for resilient engines
    voicecache_engine_{attempts,retries,failures,timeouts}_total{engine},
    voicecache_engine_rejected_total{engine,reason="open|queue"},
    voicecache_engine_breaker_transitions_total{engine,state},
    voicecache_engine_in_flight{engine}, voicecache_engine_queued{engine}

The hit path is the product's hot loop, so the observer keeps plain Python numbers (a dict
increment and a bisect: well under a microsecond each, where a prometheus-client
`Counter.inc` costs ~1.5 µs) and one custom collector turns them into metric families when
Prometheus scrapes. Each `Metrics` has its own `CollectorRegistry`, so many apps can live in
one process (as in the tests).

Several worker processes (`VOICECACHE_WORKERS` > 1): each worker counts on its own and
`/metrics` shows the worker that answered the scrape. Run one worker per port (or per
container) and scrape each when per-worker accuracy matters.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from voicecache.cache.service import Gateway
from voicecache.circuit import STATES
from voicecache.model import SpeechResult, TierStats
from voicecache.observability.insights import RESULTS, Insights

CIRCUIT_STATES = STATES
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_ENGINE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class StateSnapshot:
    """Tier and engine state read at scrape time."""

    tiers: list[TierStats] = field(default_factory=list)
    tier_errors: dict[str, int] = field(default_factory=dict)
    engine_states: dict[str, str] = field(default_factory=dict)
    # Resilience counters of engines that keep them (`ResilientEngine`): name -> counter -> n.
    engine_counters: dict[str, dict[str, Any]] = field(default_factory=dict)


# Plain attributes a resilient engine keeps, exposed per engine when present.
_ENGINE_COUNTERS = {
    "attempts": "Upstream attempts, retries included",
    "retries": "Attempts that were retries",
    "failures": "Attempts that failed",
    "timeouts": "Attempts that timed out",
}
_ENGINE_GAUGES = {
    "in_flight": "Engine calls running upstream now",
    "queued": "Engine calls waiting for a concurrency slot",
}


def _circuit_state(value: object) -> str | None:
    # Tiers and engines share one breaker (`voicecache.circuit`), so one spelling of states.
    return value if isinstance(value, str) else None


class _StateCollector(Collector):
    """Exposes the last `StateSnapshot` (refreshed right before every scrape)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        snap = self.metrics.state
        size = GaugeMetricFamily("voicecache_tier_bytes", "Bytes stored in a tier", labels=["tier"])
        entries = GaugeMetricFamily(
            "voicecache_tier_entries", "Entries stored in a tier", labels=["tier"]
        )
        capacity = GaugeMetricFamily(
            "voicecache_tier_capacity_bytes", "Byte budget of a tier", labels=["tier"]
        )
        evictions = CounterMetricFamily(
            "voicecache_evictions", "Entries evicted to make room", labels=["tier"]
        )
        errors = CounterMetricFamily(
            "voicecache_tier_errors",
            "Tier operations that failed (served as misses)",
            labels=["tier"],
        )
        pinned_rejected = CounterMetricFamily(
            "voicecache_pinned_rejected",
            "Pinned entries stored unpinned because the pinned budget was full",
            labels=["tier"],
        )
        for stats in snap.tiers:
            if "pinned_rejected" in stats.extra:
                pinned_rejected.add_metric([stats.name], stats.extra["pinned_rejected"])
            size.add_metric([stats.name], stats.bytes)
            entries.add_metric([stats.name], stats.entries)
            if stats.capacity_bytes is not None:
                capacity.add_metric([stats.name], stats.capacity_bytes)
            evictions.add_metric([stats.name], stats.evictions)
            failed = max(stats.errors, snap.tier_errors.get(stats.name, 0))
            errors.add_metric([stats.name], failed)
        circuit = GaugeMetricFamily(
            "voicecache_engine_circuit_state",
            "1 for an engine's current circuit-breaker state (closed, open, half_open)",
            labels=["engine", "state"],
        )
        for engine, state in snap.engine_states.items():
            for candidate in CIRCUIT_STATES:
                circuit.add_metric([engine, candidate], 1.0 if candidate == state else 0.0)
        tier_circuit = GaugeMetricFamily(
            "voicecache_tier_circuit_state",
            "1 for a remote tier's current circuit-breaker state (closed, open, half_open)",
            labels=["tier", "state"],
        )
        for stats in snap.tiers:
            tier_state = _circuit_state(stats.extra.get("circuit"))
            if tier_state is not None:
                for candidate in CIRCUIT_STATES:
                    tier_circuit.add_metric([stats.name, candidate], float(candidate == tier_state))
        families: list[Metric] = [size, entries, capacity, evictions, errors, circuit]
        families.extend((tier_circuit, pinned_rejected))
        families.extend(self._engine_families(snap))
        return families

    @staticmethod
    def _engine_families(snap: StateSnapshot) -> list[Metric]:
        families: list[Metric] = []
        for name, help_text in _ENGINE_COUNTERS.items():
            family = CounterMetricFamily(f"voicecache_engine_{name}", help_text, labels=["engine"])
            for engine, counters in snap.engine_counters.items():
                if isinstance(counters.get(name), int | float):
                    family.add_metric([engine], counters[name])
            families.append(family)
        for name, help_text in _ENGINE_GAUGES.items():
            gauge = GaugeMetricFamily(f"voicecache_engine_{name}", help_text, labels=["engine"])
            for engine, counters in snap.engine_counters.items():
                if isinstance(counters.get(name), int | float):
                    gauge.add_metric([engine], counters[name])
            families.append(gauge)
        rejected = CounterMetricFamily(
            "voicecache_engine_rejected",
            "Engine calls refused before reaching the engine (open circuit, full queue)",
            labels=["engine", "reason"],
        )
        transitions = CounterMetricFamily(
            "voicecache_engine_breaker_transitions",
            "Circuit-breaker state changes of an engine",
            labels=["engine", "state"],
        )
        for engine, counters in snap.engine_counters.items():
            for reason in ("open", "queue"):
                value = counters.get(f"rejected_{reason}")
                if isinstance(value, int | float):
                    rejected.add_metric([engine, reason], value)
            changes = counters.get("breaker_transitions")
            if isinstance(changes, dict):
                for state, count in changes.items():
                    transitions.add_metric([engine, str(state)], count)
        families.extend((rejected, transitions))
        return families


class _Histogram:
    """A label-less histogram as plain numbers: counts per bucket, sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric(labels, buckets, self.total)


# Label sets per metric family: past this many, new ones are counted under `other`, so no
# stream of requests can grow the families (label values are bounded names: statuses, tier
# names, engine names of at most 64 characters).
MAX_LABEL_SETS = 200

L = TypeVar("L")


def _bounded_labels(family: Mapping[L, object], labels: L, overflow: L) -> L:
    """`labels`, or `overflow` when `family` has no room for another label set."""
    if labels in family or len(family) < MAX_LABEL_SETS:
        return labels
    return overflow


class Metrics(Collector):
    """The gateway's observer: request, engine and cost counters for Prometheus (it is its
    own collector) plus the dashboard's `Insights`."""

    def __init__(self, *, price_per_million_chars: float, insights: Insights | None = None):
        self.price_per_char = price_per_million_chars / 1_000_000
        self.insights = insights or Insights()
        self.state = StateSnapshot()
        # (result, tier, engine) -> count; result and tier as the metrics spell them.
        self.requests: dict[tuple[str, str, str], int] = {}
        self.request_seconds = {result: _Histogram(_LATENCY_BUCKETS) for result in (*RESULTS,)}
        self.first_byte_seconds: dict[str, _Histogram] = {}
        self.engine_calls: dict[tuple[str, str], int] = {}
        self.engine_seconds: dict[str, _Histogram] = {}
        self.characters = {"engine": 0, "cache": 0}
        self.cost_saved = 0.0
        self.errors: dict[str, int] = {}
        self._tier_stats: dict[str, tuple[float, TierStats]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(_StateCollector(self))

    # -- GatewayObserver ---------------------------------------------------------------------

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None:
        status = result.status.lower()
        key = (status, result.tier or "none", engine)
        requests = self.requests
        if key not in requests:
            key = _bounded_labels(requests, key, (status, "other", "other"))
        requests[key] = requests.get(key, 0) + 1
        histogram = self.request_seconds.get(status)
        if histogram is None:  # a status this module does not know yet: count it anyway
            status = _bounded_labels(self.request_seconds, status, "other")
            histogram = self.request_seconds.setdefault(status, _Histogram(_LATENCY_BUCKETS))
        histogram.observe(seconds)
        if status != "miss":
            characters = len(result.meta.text)
            self.characters["cache"] += characters
            self.cost_saved += characters * self.price_per_char
        self.insights.record(result, seconds)

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None:
        # `engine` may be a name the client sent that no engine has: bounded like any label.
        key = _bounded_labels(self.requests, ("error", "none", engine), ("error", "none", "other"))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.request_seconds["error"].observe(seconds)
        self.insights.record_error()

    def error_answered(self, name: str) -> None:
        """The API answered an error of class `name` (HTTP 4xx/5xx, from any layer)."""
        name = _bounded_labels(self.errors, name, "other")
        self.errors[name] = self.errors.get(name, 0) + 1

    def first_byte(self, result: str, seconds: float) -> None:
        """A streamed response wrote its first audio byte `seconds` after the request arrived
        (called by the HTTP layer, which alone knows when bytes are written)."""
        status = result.lower()
        histogram = self.first_byte_seconds.get(status)
        if histogram is None:
            histogram = self.first_byte_seconds[status] = _Histogram(_LATENCY_BUCKETS)
        histogram.observe(seconds)

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None:
        key = _bounded_labels(self.engine_calls, (engine, outcome), ("other", outcome))
        self.engine_calls[key] = self.engine_calls.get(key, 0) + 1
        histogram = self.engine_seconds.get(engine)
        if histogram is None:
            engine = _bounded_labels(self.engine_seconds, engine, "other")
            histogram = self.engine_seconds.setdefault(engine, _Histogram(_ENGINE_BUCKETS))
        histogram.observe(seconds)
        if outcome == "ok":
            self.characters["engine"] += characters

    # -- scraping ----------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "voicecache_requests",
            "Speech requests by result, tier that served them, and engine",
            labels=["result", "tier", "engine"],
        )
        for labels, count in list(self.requests.items()):
            requests.add_metric(list(labels), count)
        seconds = HistogramMetricFamily(
            "voicecache_request_seconds",
            "Time to produce the audio of a request (gateway, without HTTP)",
            labels=["result"],
        )
        for result, histogram in self.request_seconds.items():
            histogram.add_to(seconds, [result])
        first_byte = HistogramMetricFamily(
            "voicecache_first_byte_seconds",
            "Streamed responses: from the request's arrival to the first audio byte written",
            labels=["result"],
        )
        for result, histogram in list(self.first_byte_seconds.items()):
            histogram.add_to(first_byte, [result])
        calls = CounterMetricFamily(
            "voicecache_engine_calls", "Calls to engines by outcome", labels=["engine", "outcome"]
        )
        for engine_outcome, count in list(self.engine_calls.items()):
            calls.add_metric(list(engine_outcome), count)
        engine_seconds = HistogramMetricFamily(
            "voicecache_engine_seconds", "Engine call duration", labels=["engine"]
        )
        for engine, histogram in list(self.engine_seconds.items()):
            histogram.add_to(engine_seconds, [engine])
        characters = CounterMetricFamily(
            "voicecache_characters",
            "Characters synthesized by engines (engine) or served from the cache (cache)",
            labels=["source"],
        )
        for source, count in self.characters.items():
            characters.add_metric([source], count)
        cost = CounterMetricFamily(
            "voicecache_cost_saved",
            "Estimated engine cost avoided by cache hits (price_per_million_chars)",
            value=self.cost_saved,
        )
        errors = CounterMetricFamily(
            "voicecache_errors", "Error answers (HTTP 4xx/5xx) by error class", labels=["type"]
        )
        for name, count in list(self.errors.items()):
            errors.add_metric([name], count)
        return [requests, seconds, first_byte, calls, engine_seconds, characters, cost, errors]

    async def refresh(self, gateway: Gateway) -> None:
        """Read tier stats and engine state for the next scrape.

        Some tiers count by listing (a Redis SCAN, an S3 listing), so each tier's stats are
        kept for 50 times as long as reading them took: free for memory and disk, seconds
        for a large bucket, whatever the scrape interval."""
        tiers: list[TierStats] = []
        for tier in gateway.cache.tiers:
            cached = self._tier_stats.get(tier.name)
            now = time.monotonic()
            if cached is not None and now < cached[0]:
                tiers.append(cached[1])
                continue
            try:
                stats = await tier.stats()
            except Exception:  # a dead tier still gets its error counter exposed
                stats = TierStats(name=tier.name)
            took = time.monotonic() - now
            self._tier_stats[tier.name] = (now + took * 50, stats)
            tiers.append(stats)
        engine_states: dict[str, str] = {}
        engine_counters: dict[str, dict[str, Any]] = {}
        for name, engine in gateway.engines.items():
            state = _circuit_state(getattr(engine, "state", None))
            if state is not None:
                engine_states[name] = state
            counters = {
                attribute: getattr(engine, attribute)
                for attribute in (*_ENGINE_COUNTERS, *_ENGINE_GAUGES, "rejected_open",
                                  "rejected_queue", "breaker_transitions")
                if hasattr(engine, attribute)
            }  # fmt: skip
            if counters:
                engine_counters[name] = counters
        self.state = StateSnapshot(
            tiers=tiers,
            tier_errors=dict(gateway.cache.errors),
            engine_states=engine_states,
            engine_counters=engine_counters,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    def totals(self) -> dict[str, Any]:
        """Sums of the counters, as `/metrics` shows them (for the dashboard and `stats`)."""
        requests: dict[str, int] = {}
        by_tier: dict[str, int] = {}
        for (result, tier, _), count in list(self.requests.items()):
            requests[result] = requests.get(result, 0) + count
            if result != "miss" and tier != "none":
                by_tier[tier] = by_tier.get(tier, 0) + count
        engine_calls: dict[str, dict[str, int]] = {}
        for (engine, outcome), count in list(self.engine_calls.items()):
            engine_calls.setdefault(engine, {})[outcome] = count
        served = sum(v for k, v in requests.items() if k != "error")
        from_cache = sum(requests.get(k, 0) for k in ("hit", "coalesced", "stale"))
        return {
            "requests": requests,
            "hits_by_tier": by_tier,
            "served": served,
            "hit_ratio": from_cache / served if served else None,
            "engine_calls": engine_calls,
            "characters": dict(self.characters),
            "cost_saved": self.cost_saved,
            "price_per_million_chars": self.price_per_char * 1_000_000,
            "errors": dict(self.errors),
        }
