"""What the dashboard shows beyond plain counters, kept in process and bounded.

- hit ratio over time: one bucket of counts per `interval` seconds, the last `history` kept;
- latency percentiles of hits and misses: the last `window` latencies of each;
- lines: per cache key, how often it was asked for and hit, capped at `max_lines` keys and
  `max_bytes` (texts can be long; the oldest key is forgotten first), which gives the most
  repeated lines and the inefficient ones (stored, never hit again).

`record` runs on every request, hits included, so it does a few dict and deque operations
and nothing else; everything costly happens in `snapshot`, when the dashboard asks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voicecache.bounded import BoundedDict, sizeof_str
from voicecache.model import SpeechResult

# Result statuses as the metrics spell them (lower case), in bucket order.
RESULTS = ("hit", "miss", "coalesced", "stale", "error")
_INDEX = {name.upper(): i for i, name in enumerate(RESULTS)}
# A segmented text some of whose segments the engine made counts as a miss here.
_INDEX["PARTIAL"] = _INDEX["MISS"]
_MISSES = ("MISS", "PARTIAL")


class _Line:
    """Counters for one cache key."""

    __slots__ = ("bytes", "engine", "hits", "requests", "stored", "tags", "text", "voice")
    SIZE = 200  # the object with its 8 slots and its int counters, rounded up

    def __init__(self, result: SpeechResult) -> None:
        meta = result.meta
        self.text = meta.text
        self.voice = meta.voice
        self.engine = meta.engine
        self.tags = meta.tags
        self.bytes = len(result.data)
        self.stored = result.status in _MISSES and result.stored
        self.requests = 0
        self.hits = 0


def _line_size(key: str, line: _Line) -> int:
    # The texts and the key are per line; voice, engine and tag strings are mostly shared.
    return sizeof_str(key) + sizeof_str(line.text) + _Line.SIZE + 8 * len(line.tags)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in milliseconds over the last samples."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None


def percentiles(samples: list[float]) -> Percentiles:
    """Nearest-rank percentiles of latencies given in seconds, reported in milliseconds."""
    if not samples:
        return Percentiles(0, None, None, None)
    ordered = sorted(samples)

    def rank(q: float) -> float:
        index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
        return round(ordered[index] * 1000, 3)

    return Percentiles(len(ordered), rank(0.50), rank(0.90), rank(0.99))


class Insights:
    """In-process recorder for the dashboard: cheap to feed, bounded in memory."""

    def __init__(
        self,
        *,
        interval: float = 5.0,
        history: int = 240,
        window: int = 2048,
        max_lines: int = 10_000,
        max_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.max_lines = max_lines
        # Each bucket: [start, hit, miss, coalesced, stale, error].
        self._buckets: deque[list[float]] = deque(maxlen=history)
        self._current: list[float] | None = None
        self._hit_latency: deque[float] = deque(maxlen=window)
        self._miss_latency: deque[float] = deque(maxlen=window)
        self._lines: BoundedDict[str, _Line] = BoundedDict(max_lines, max_bytes, _line_size)

    def _count(self, index: int) -> None:
        now = self.clock()
        current = self._current
        if current is None or now >= current[0] + self.interval:
            current = [now - now % self.interval, 0, 0, 0, 0, 0]
            self._buckets.append(current)
            self._current = current
        current[index + 1] += 1

    def record(self, result: SpeechResult, seconds: float) -> None:
        """One served request."""
        status = result.status
        self._count(_INDEX.get(status, 0))
        if status in _MISSES:
            self._miss_latency.append(seconds)
        else:
            self._hit_latency.append(seconds)
        line = self._lines.get(result.key)
        if line is None:
            line = _Line(result)
            self._lines[result.key] = line
        line.requests += 1
        if status not in _MISSES:
            line.hits += 1

    @property
    def tracked_bytes(self) -> int:
        """What the per-line counters take, as counted against `max_bytes`."""
        return self._lines.bytes

    def record_error(self) -> None:
        """One failed request."""
        self._count(4)

    def snapshot(self, top: int = 10) -> dict[str, Any]:
        """Everything the dashboard draws that the counters do not give."""
        buckets = [
            {
                "t": bucket[0],
                **{name: int(bucket[i + 1]) for i, name in enumerate(RESULTS)},
            }
            for bucket in list(self._buckets)
        ]
        lines = list(self._lines.items())
        repeated = sorted(lines, key=lambda item: item[1].requests, reverse=True)[:top]
        unused = [(key, line) for key, line in lines if line.stored and line.hits == 0]
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for _, line in unused:
            group_key = (line.voice, ",".join(line.tags) or "-")
            group = groups.setdefault(
                group_key, {"voice": group_key[0], "tags": group_key[1], "entries": 0, "bytes": 0}
            )
            group["entries"] += 1
            group["bytes"] += line.bytes
        return {
            "interval": self.interval,
            "history": buckets,
            "latency_ms": {
                "hit": _as_dict(percentiles(list(self._hit_latency))),
                "miss": _as_dict(percentiles(list(self._miss_latency))),
            },
            "tracked_lines": len(lines),
            "top_lines": [
                {
                    "key": key,
                    "text": line.text,
                    "voice": line.voice,
                    "engine": line.engine,
                    "tags": list(line.tags),
                    "requests": line.requests,
                    "hits": line.hits,
                    "bytes": line.bytes,
                }
                for key, line in repeated
                if line.requests > 1
            ],
            "never_hit": {
                "entries": len(unused),
                "bytes": sum(line.bytes for _, line in unused),
                "groups": sorted(groups.values(), key=lambda g: g["bytes"], reverse=True)[:top],
            },
        }


def _as_dict(value: Percentiles) -> dict[str, Any]:
    return {"count": value.count, "p50": value.p50, "p90": value.p90, "p99": value.p99}
