"""Prometheus metrics, fed by the gateway as its `GatewayObserver`.

Per request (plain counters, ~1 µs plus the dashboard's `Insights`):

    voicecache_requests_total{result="hit|miss|coalesced|stale|partial|error",tier,engine}
    voicecache_request_seconds{result}                 histogram
    voicecache_first_byte_seconds{result}              histogram: streamed responses, from
                                                       the request's arrival to the first
                                                       audio byte written (`first_byte`)
    voicecache_engine_calls_total{engine,outcome}      outcome "ok" or the error class
    voicecache_engine_seconds{engine}                  histogram
    voicecache_characters_total{source="engine|cache"} characters synthesized vs served
                                                       (a segmented text: per segment)
    voicecache_segments_total{result="hit|miss|coalesced|stale|error"}
                                                       segments of segmented texts
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
`Counter.inc` costs ~1.5 µs) and turns them into metric families when Prometheus scrapes.
Each `Metrics` has its own `CollectorRegistry`, so many apps can live in one process (as in
the tests). Tier and engine state come from `state.py`.

Several worker processes (`VOICECACHE_WORKERS` > 1): `MultiprocessMetrics`
(`multiprocess.py`) counts in prometheus-client's multiprocess files instead, so every
worker's `/metrics` and `/dashboard/data` show the sum over all workers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from voicecache.cache.service import Gateway
from voicecache.model import SpeechResult
from voicecache.observability.insights import RESULTS, Insights
from voicecache.observability.state import (
    Sample,
    StateReader,
    StateSnapshot,
    state_families,
    state_samples,
)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
ENGINE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The per-request families and their help (`multiprocess.py` makes the same ones).
HELP = {
    "voicecache_requests": "Speech requests by result, tier that served them, and engine",
    "voicecache_request_seconds": "Time to produce the audio of a request (gateway, without HTTP)",
    "voicecache_first_byte_seconds": (
        "Streamed responses: from the request's arrival to the first audio byte written"
    ),
    "voicecache_engine_calls": "Calls to engines by outcome",
    "voicecache_engine_seconds": "Engine call duration",
    "voicecache_characters": (
        "Characters synthesized by engines (engine) or served from the cache (cache)"
    ),
    "voicecache_cost_saved": (
        "Estimated engine cost avoided by cache hits (price_per_million_chars)"
    ),
    "voicecache_errors": "Error answers (HTTP 4xx/5xx) by error class",
    "voicecache_segments": "Segments of texts spoken in segments, by how each was obtained",
}


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


def bounded_labels(family: Mapping[L, object], labels: L, overflow: L) -> L:
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
        self.request_seconds = {result: _Histogram(LATENCY_BUCKETS) for result in (*RESULTS,)}
        self.first_byte_seconds: dict[str, _Histogram] = {}
        self.engine_calls: dict[tuple[str, str], int] = {}
        self.engine_seconds: dict[str, _Histogram] = {}
        self.characters = {"engine": 0, "cache": 0}
        self.segments: dict[str, int] = {}
        self.cost_saved = 0.0
        self.errors: dict[str, int] = {}
        self._reader = StateReader()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    @property
    def workers(self) -> int:
        """How many processes the numbers are the sum of."""
        return 1

    def start(self, gateway: Gateway) -> None:
        """Start background work (servers only): nothing for a single process."""

    async def aclose(self) -> None:
        """Stop background work."""

    # -- GatewayObserver ---------------------------------------------------------------------

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None:
        status = result.status.lower()
        key = (status, result.tier or "none", engine)
        requests = self.requests
        if key not in requests:
            key = bounded_labels(requests, key, (status, "other", "other"))
        requests[key] = requests.get(key, 0) + 1
        histogram = self.request_seconds.get(status)
        if histogram is None:  # a status this module does not know yet: count it anyway
            bounded = bounded_labels(self.request_seconds, status, "other")
            histogram = self.request_seconds.setdefault(bounded, _Histogram(LATENCY_BUCKETS))
        histogram.observe(seconds)
        # A segmented text's characters were counted segment by segment (`segment_done`).
        if status != "miss" and result.segments is None:
            characters = len(result.meta.text)
            self.characters["cache"] += characters
            self.cost_saved += characters * self.price_per_char
        self.insights.record(result, seconds)

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None:
        # `engine` may be a name the client sent that no engine has: bounded like any label.
        key = bounded_labels(self.requests, ("error", "none", engine), ("error", "none", "other"))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.request_seconds["error"].observe(seconds)
        self.insights.record_error()

    def error_answered(self, name: str) -> None:
        """The API answered an error of class `name` (HTTP 4xx/5xx, from any layer)."""
        name = bounded_labels(self.errors, name, "other")
        self.errors[name] = self.errors.get(name, 0) + 1

    def first_byte(self, result: str, seconds: float) -> None:
        """A streamed response wrote its first audio byte `seconds` after the request arrived
        (called by the HTTP layer, which alone knows when bytes are written)."""
        status = result.lower()
        histogram = self.first_byte_seconds.get(status)
        if histogram is None:
            histogram = self.first_byte_seconds[status] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None:
        key = bounded_labels(self.engine_calls, (engine, outcome), ("other", outcome))
        self.engine_calls[key] = self.engine_calls.get(key, 0) + 1
        histogram = self.engine_seconds.get(engine)
        if histogram is None:
            bounded = bounded_labels(self.engine_seconds, engine, "other")
            histogram = self.engine_seconds.setdefault(bounded, _Histogram(ENGINE_BUCKETS))
        histogram.observe(seconds)
        if outcome == "ok":
            self.characters["engine"] += characters

    def segment_done(self, status: str, characters: int) -> None:
        result = status.lower()
        self.segments[result] = self.segments.get(result, 0) + 1
        if result not in ("miss", "error"):  # the engine's characters come from engine_call
            self.characters["cache"] += characters
            self.cost_saved += characters * self.price_per_char

    # -- scraping ----------------------------------------------------------------------------

    def counter_families(self) -> list[Metric]:
        """The per-request counters and histograms of this process."""
        requests = CounterMetricFamily(
            "voicecache_requests", HELP["voicecache_requests"], labels=["result", "tier", "engine"]
        )
        for labels, count in list(self.requests.items()):
            requests.add_metric(list(labels), count)
        seconds = HistogramMetricFamily(
            "voicecache_request_seconds", HELP["voicecache_request_seconds"], labels=["result"]
        )
        for result, histogram in self.request_seconds.items():
            histogram.add_to(seconds, [result])
        first_byte = HistogramMetricFamily(
            "voicecache_first_byte_seconds",
            HELP["voicecache_first_byte_seconds"],
            labels=["result"],
        )
        for result, histogram in list(self.first_byte_seconds.items()):
            histogram.add_to(first_byte, [result])
        calls = CounterMetricFamily(
            "voicecache_engine_calls", HELP["voicecache_engine_calls"], labels=["engine", "outcome"]
        )
        for engine_outcome, count in list(self.engine_calls.items()):
            calls.add_metric(list(engine_outcome), count)
        engine_seconds = HistogramMetricFamily(
            "voicecache_engine_seconds", HELP["voicecache_engine_seconds"], labels=["engine"]
        )
        for engine, histogram in list(self.engine_seconds.items()):
            histogram.add_to(engine_seconds, [engine])
        characters = CounterMetricFamily(
            "voicecache_characters", HELP["voicecache_characters"], labels=["source"]
        )
        for source, count in self.characters.items():
            characters.add_metric([source], count)
        cost = CounterMetricFamily(
            "voicecache_cost_saved", HELP["voicecache_cost_saved"], value=self.cost_saved
        )
        errors = CounterMetricFamily(
            "voicecache_errors", HELP["voicecache_errors"], labels=["type"]
        )
        for name, count in list(self.errors.items()):
            errors.add_metric([name], count)
        segments = CounterMetricFamily(
            "voicecache_segments", HELP["voicecache_segments"], labels=["result"]
        )
        for result, count in list(self.segments.items()):
            segments.add_metric([result], count)
        return [
            requests,
            seconds,
            first_byte,
            calls,
            engine_seconds,
            characters,
            cost,
            errors,
            segments,
        ]

    def current_state(self) -> list[Sample]:
        """The tier and engine state samples as of the last `refresh`."""
        return state_samples(self.state)

    def collect(self) -> Iterable[Metric]:
        return [*self.counter_families(), *state_families(self.current_state())]

    async def refresh(self, gateway: Gateway) -> None:
        """Read tier stats and engine state for the next scrape (see `state.StateReader`)."""
        self.state = await self._reader.read(gateway)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    def totals(self) -> dict[str, Any]:
        """Sums of the counters, read from the same families `/metrics` shows (for the
        dashboard and `stats`)."""
        return totals_of(self.collect(), self.price_per_char * 1_000_000)


def _value(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def totals_of(families: Iterable[Metric], price: float) -> dict[str, Any]:
    """Request, engine, character, cost and error totals from metric families."""
    requests: dict[str, float] = {}
    by_tier: dict[str, float] = {}
    engine_calls: dict[str, dict[str, float]] = {}
    characters: dict[str, float] = {"engine": 0, "cache": 0}
    errors: dict[str, float] = {}
    cost_saved = 0.0
    for family in families:
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == "voicecache_requests_total":
                result = labels["result"]
                requests[result] = requests.get(result, 0) + value
                if result != "miss" and labels["tier"] != "none":
                    by_tier[labels["tier"]] = by_tier.get(labels["tier"], 0) + value
            elif sample.name == "voicecache_engine_calls_total":
                per = engine_calls.setdefault(labels["engine"], {})
                per[labels["outcome"]] = per.get(labels["outcome"], 0) + value
            elif sample.name == "voicecache_characters_total":
                characters[labels["source"]] = characters.get(labels["source"], 0) + value
            elif sample.name == "voicecache_errors_total":
                errors[labels["type"]] = errors.get(labels["type"], 0) + value
            elif sample.name == "voicecache_cost_saved_total":
                cost_saved += value
    served = sum(v for k, v in requests.items() if k != "error")
    from_cache = sum(requests.get(k, 0) for k in ("hit", "coalesced", "stale"))
    return {
        "requests": {k: _value(v) for k, v in requests.items()},
        "hits_by_tier": {k: _value(v) for k, v in by_tier.items()},
        "served": _value(served),
        "hit_ratio": from_cache / served if served else None,
        "engine_calls": {
            engine: {k: _value(v) for k, v in per.items()} for engine, per in engine_calls.items()
        },
        "characters": {k: _value(v) for k, v in characters.items()},
        "cost_saved": cost_saved,
        "price_per_million_chars": price,
        "errors": {k: _value(v) for k, v in errors.items()},
    }
