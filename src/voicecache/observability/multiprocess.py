"""Metrics of several worker processes, added up: prometheus-client's multiprocess mode.

With `VOICECACHE_WORKERS` > 1, `voicecache serve` empties `<data dir>/metrics` and names it in
`PROMETHEUS_MULTIPROC_DIR` before uvicorn starts the workers (prometheus-client picks its
storage when it is first imported, so the variable must be set before any worker starts).
Every worker then counts in its own memory-mapped files there, and whichever worker answers a
scrape reads all of them:

- per-request counters and histograms (`voicecache_requests_total`, …) are prometheus-client
  `Counter` and `Histogram` objects, summed over every worker that ever ran since the start
  (a worker that died still counts what it served);
- tier and engine state (`state.py`) is published by each live worker every
  `PUBLISH_INTERVAL` seconds (and by the scraping worker just before it reads) as gauges in
  `liveall` mode, one value per process, and combined by `state.combine`: summed, except the
  size of a store every worker shares. A worker removes its gauges when it stops, and a
  worker that died without stopping is left out (its pid no longer runs).

So `/metrics` and `/dashboard/data` give the same totals whichever worker answers. The
dashboard's recent-history charts, latency percentiles and line lists (`Insights`) stay per
worker: they say which.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
from pathlib import Path
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from voicecache.cache.service import Gateway
from voicecache.errors import ConfigError
from voicecache.model import SpeechResult
from voicecache.observability.insights import Insights
from voicecache.observability.metrics import (
    ENGINE_BUCKETS,
    HELP,
    LATENCY_BUCKETS,
    Metrics,
    bounded_labels,
)
from voicecache.observability.state import FAMILIES, Sample, combine, state_families

log = logging.getLogger(__name__)

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
# How often each worker publishes its tier and engine state.
PUBLISH_INTERVAL = 2.0


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


M = TypeVar("M", Counter, Histogram)


def _child(
    children: dict[Any, dict[tuple[str, ...], Any]],
    family: M,
    labels: tuple[str, ...],
    overflow: tuple[str, ...],
) -> M:
    """`family.labels(*labels)`, kept in a dict (bounded like every family: past
    `MAX_LABEL_SETS` label sets, new ones are counted under `overflow`)."""
    known = children.setdefault(family, {})
    child = known.get(labels)
    if child is None:
        labels = bounded_labels(known, labels, overflow)
        child = known.setdefault(labels, family.labels(*labels))
    return cast(M, child)


class MultiprocessMetrics(Metrics):
    """`Metrics` whose counters live in `directory`, shared by every worker process."""

    def __init__(
        self,
        directory: Path,
        *,
        price_per_million_chars: float,
        insights: Insights | None = None,
    ) -> None:
        if os.environ.get(ENVIRONMENT) != str(directory) or not getattr(
            values.ValueClass, "_multiprocess", False
        ):
            raise ConfigError(
                f"multiprocess metrics need {ENVIRONMENT}={directory} set before the process "
                "starts (voicecache serve does it for its workers)"
            )
        super().__init__(price_per_million_chars=price_per_million_chars, insights=insights)
        self.directory = directory
        self._requests = Counter(
            "voicecache_requests",
            HELP["voicecache_requests"],
            ["result", "tier", "engine"],
            registry=None,
        )
        self._seconds = Histogram(
            "voicecache_request_seconds",
            HELP["voicecache_request_seconds"],
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._first_byte = Histogram(
            "voicecache_first_byte_seconds",
            HELP["voicecache_first_byte_seconds"],
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._engine_calls = Counter(
            "voicecache_engine_calls",
            HELP["voicecache_engine_calls"],
            ["engine", "outcome"],
            registry=None,
        )
        self._engine_seconds = Histogram(
            "voicecache_engine_seconds",
            HELP["voicecache_engine_seconds"],
            ["engine"],
            buckets=ENGINE_BUCKETS,
            registry=None,
        )
        characters = Counter(
            "voicecache_characters", HELP["voicecache_characters"], ["source"], registry=None
        )
        self._cache_characters = characters.labels("cache")
        self._engine_characters = characters.labels("engine")
        self._errors = Counter(
            "voicecache_errors", HELP["voicecache_errors"], ["type"], registry=None
        )
        self._segments = Counter(
            "voicecache_segments", HELP["voicecache_segments"], ["result"], registry=None
        )
        # One gauge per state family, one value per process (`liveall`: the pid is a label).
        self._gauges = {
            name: Gauge(name, help_text, list(labels), registry=None, multiprocess_mode="liveall")
            for name, (_, help_text, labels) in FAMILIES.items()
        }
        self._publisher: asyncio.Task[None] | None = None
        self._live_workers = 1
        # Labelled children by label values: `labels()` validates and locks on every call,
        # a dict lookup does not (the hit path pays ~5 µs of file writes as it is).
        self._request_counts: dict[tuple[str, str, str], Counter] = {}
        self._request_times: dict[str, Histogram] = {}
        self._children: dict[Any, dict[tuple[str, ...], Any]] = {}

    # -- GatewayObserver: into the shared files ------------------------------------------------

    def request_done(self, result: SpeechResult, engine: str, seconds: float) -> None:
        status = result.status.lower()
        self._count(status, result.tier or "none", engine, seconds)
        # A segmented text's characters were counted segment by segment (`segment_done`).
        if status != "miss" and result.segments is None:
            # The money saved is these characters times the price: computed when read.
            self._cache_characters.inc(len(result.meta.text))
        self.insights.record(result, seconds)

    def request_failed(self, error: Exception, engine: str, seconds: float) -> None:
        self._count("error", "none", engine, seconds)
        self.insights.record_error()

    def _count(self, result: str, tier: str, engine: str, seconds: float) -> None:
        key = (result, tier, engine)
        counter = self._request_counts.get(key)
        if counter is None:
            # Bounded like the single-process families: an engine name may come from a client.
            key = bounded_labels(self._request_counts, key, (result, "other", "other"))
            counter = self._request_counts.setdefault(key, self._requests.labels(*key))
        counter.inc()
        histogram = self._request_times.get(result)
        if histogram is None:
            result = bounded_labels(self._request_times, result, "other")
            histogram = self._request_times.setdefault(result, self._seconds.labels(result))
        histogram.observe(seconds)

    def error_answered(self, name: str) -> None:
        _child(self._children, self._errors, (name,), ("other",)).inc()

    def first_byte(self, result: str, seconds: float) -> None:
        _child(self._children, self._first_byte, (result.lower(),), ("other",)).observe(seconds)

    def engine_call(self, engine: str, outcome: str, seconds: float, characters: int) -> None:
        _child(self._children, self._engine_calls, (engine, outcome), ("other", outcome)).inc()
        _child(self._children, self._engine_seconds, (engine,), ("other",)).observe(seconds)
        if outcome == "ok":
            self._engine_characters.inc(characters)

    def segment_done(self, status: str, characters: int) -> None:
        result = status.lower()
        _child(self._children, self._segments, (result,), ("other",)).inc()
        if result not in ("miss", "error"):  # the engine's characters come from engine_call
            self._cache_characters.inc(characters)

    # -- state: published by every worker, read by the one scraped ---------------------------

    async def refresh(self, gateway: Gateway) -> None:
        await super().refresh(gateway)
        for name, labels, value in super().current_state():
            self._gauges[name].labels(*labels).set(value)

    def start(self, gateway: Gateway) -> None:
        self._publisher = asyncio.get_running_loop().create_task(self._publish(gateway))

    async def _publish(self, gateway: Gateway) -> None:
        while True:
            try:
                await self.refresh(gateway)
            except Exception:  # keep publishing: one bad read must not end the loop
                log.exception("publishing metrics state failed")
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def aclose(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        mark_process_dead(os.getpid(), str(self.directory))

    def _read(self) -> tuple[list[Metric], list[Sample]]:
        """Every worker's counters (summed by prometheus-client) and the live workers' state
        samples (combined here)."""
        files = glob.glob(os.path.join(self.directory, "*.db"))
        counters: list[Metric] = []
        published: list[Sample] = []
        workers: set[str] = set()
        for metric in MultiProcessCollector.merge(files, accumulate=True):
            if metric.name not in FAMILIES:
                counters.append(metric)
                continue
            names = FAMILIES[metric.name][2]
            for sample in metric.samples:
                pid = sample.labels["pid"]
                if pid != str(os.getpid()) and not _running(int(pid)):
                    continue
                workers.add(pid)
                labels = tuple(sample.labels[label] for label in names)
                published.append((metric.name, labels, sample.value))
        self._live_workers = max(1, len(workers))
        return counters, combine(published)

    def current_state(self) -> list[Sample]:
        return self._read()[1]

    @property
    def workers(self) -> int:
        return self._live_workers

    def collect(self) -> list[Metric]:
        counters, samples = self._read()
        cached = sum(
            sample.value
            for metric in counters
            for sample in metric.samples
            if sample.name == "voicecache_characters_total" and sample.labels["source"] == "cache"
        )
        cost = CounterMetricFamily(
            "voicecache_cost_saved",
            HELP["voicecache_cost_saved"],
            value=cached * self.price_per_char,
        )
        return [*counters, cost, *state_families(samples)]
