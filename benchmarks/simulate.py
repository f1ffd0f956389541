"""Offline, byte-aware trace simulator for the memory tier's eviction policies.

Replays synthetic request traces through the real ``voicecache.cache.eviction`` policies
(LRU and W-TinyLFU) and through two offline references that see the whole trace:

* **Belady (size-aware heuristic)**: on a miss, admit the item and evict the resident
  items whose next use is furthest in the future until it fits; skip the admission when
  a victim it would need is used again before the item itself. Optimal for unit sizes,
  a strong (not provably optimal) bound with variable sizes.
* **Best fixed set (freq/size)**: the items with the most hits per byte that fit,
  each loaded on its first request (which is a miss, as for every other policy).

Traces use sizes 20 KB–1 MB, log-uniform, and a fixed numpy seed. Cache sizes are a
fraction of the working-set bytes (sum of the sizes of all distinct items in the
trace). The first 10 % of every trace warms the cache and is not counted.

Usage::

    python benchmarks/simulate.py [--quick] [--jobs N] [--out benchmarks/out/simulate.md]

``run(quick)`` and ``render_markdown(rows)`` let other scripts embed the table.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voicecache.cache.eviction import EvictionPolicy, LRUPolicy, WTinyLFUPolicy

SEED = 20240611
MIN_SIZE = 20_000
MAX_SIZE = 1_000_000
WARMUP_FRACTION = 0.10

LRU = "LRU"
TINYLFU = "W-TinyLFU"
BELADY = "Belady (size-aware heuristic)"
FIXED = "Best fixed set (freq/size)"
POLICIES: tuple[str, ...] = (LRU, TINYLFU, FIXED, BELADY)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Trace:
    """A request sequence: ``keys[i]`` is an object id, ``sizes[id]`` its bytes."""

    name: str
    keys: IntArray
    sizes: IntArray

    @property
    def working_set_bytes(self) -> int:
        return int(self.sizes[np.unique(self.keys)].sum())


@dataclass(frozen=True)
class Scale:
    """How big the traces are and which cache sizes to try."""

    objects: int
    requests: int
    cache_fractions: tuple[float, ...]


FULL = Scale(objects=100_000, requests=1_000_000, cache_fractions=(0.01, 0.05, 0.20))
QUICK = Scale(objects=3_000, requests=30_000, cache_fractions=(0.01, 0.05, 0.20))


# -- traces -------------------------------------------------------------------------


def _sizes(rng: np.random.Generator, n: int) -> IntArray:
    return np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE), n)).astype(np.int64)


def _zipf_ids(rng: np.random.Generator, alpha: float, n: int, count: int) -> IntArray:
    # numpy's zipf sampler needs alpha > 1 and an unbounded support; sample the
    # bounded distribution p(rank) ~ rank^-alpha directly instead.
    weights = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    return rng.choice(n, size=count, p=weights / weights.sum()).astype(np.int64)


def zipf_trace(alpha: float, scale: Scale, seed: int = SEED) -> Trace:
    """Independent requests, popularity Zipf(alpha) over ``scale.objects`` items."""
    rng = np.random.default_rng([seed, int(alpha * 100)])
    keys = _zipf_ids(rng, alpha, scale.objects, scale.requests)
    return Trace(f"Zipf {alpha}", keys, _sizes(rng, scale.objects))


def one_off_trace(scale: Scale, share: float = 0.30, seed: int = SEED) -> Trace:
    """Zipf 0.9 where ``share`` of requests are texts requested exactly once."""
    rng = np.random.default_rng([seed, 1])
    keys = _zipf_ids(rng, 0.9, scale.objects, scale.requests)
    one_off = rng.random(scale.requests) < share
    count = int(one_off.sum())
    keys[one_off] = scale.objects + np.arange(count, dtype=np.int64)
    return Trace(f"Zipf 0.9 + {share:.0%} one-off", keys, _sizes(rng, scale.objects + count))


def recency_trace(scale: Scale, loop_share: float = 0.15, seed: int = SEED) -> Trace:
    """Recency-heavy: a drifting hot set plus a cyclic scan.

    New texts keep appearing (about 4 requests each over their lifetime) and are
    re-requested soon after they appear (geometric age, mean 2 % of the drifting
    items), as when a user replays a fresh sentence. Interleaved, ``loop_share`` of
    requests walk a fixed loop (15 % of the objects) in order, the pattern that
    defeats LRU when the loop is larger than the cache.
    """
    rng = np.random.default_rng([seed, 2])
    n = scale.requests
    is_loop = rng.random(n) < loop_share
    n_loop = int(is_loop.sum())
    n_recent = n - n_loop
    loop_len = max(1, int(scale.objects * 0.15))
    drifting = max(1, n_recent // 4)
    keys = np.empty(n, dtype=np.int64)
    introduced = np.arange(n_recent, dtype=np.int64) * drifting // n_recent
    age = rng.geometric(1.0 / max(2.0, drifting * 0.02), n_recent) - 1
    keys[~is_loop] = np.abs(introduced - age)
    keys[is_loop] = drifting + np.arange(n_loop, dtype=np.int64) % loop_len
    return Trace("Recency + loop scan", keys, _sizes(rng, drifting + loop_len))


def make_traces(scale: Scale) -> list[Trace]:
    traces = [zipf_trace(alpha, scale) for alpha in (0.7, 0.9, 1.0, 1.2)]
    traces.append(one_off_trace(scale))
    traces.append(recency_trace(scale))
    return traces


# -- replay -------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    hits: int
    byte_hits: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process only: stable when other jobs share the cores


def _replay_online(trace: Trace, policy: EvictionPolicy, warmup: int) -> Result:
    """Drive a real policy exactly as the memory tier does: access, else admit."""
    names = [f"o{i}" for i in range(len(trace.sizes))]  # one str per id: hash is cached
    keys = [names[k] for k in trace.keys.tolist()]
    sizes = trace.sizes[trace.keys].tolist()
    access, admit = policy.access, policy.admit
    hits = byte_hits = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, (key, size) in enumerate(zip(keys, sizes, strict=True)):
        if access(key):
            if i >= warmup:
                hits += 1
                byte_hits += size
        else:
            admit(key, size)
    return Result(hits, byte_hits, time.perf_counter() - start, time.process_time() - cpu_start)


def next_uses(keys: IntArray) -> IntArray:
    """``out[i]`` = index of the next request for ``keys[i]``, or ``len(keys)`` if none."""
    n = len(keys)
    out = np.full(n, n, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    out[order[:-1][same]] = order[1:][same]
    return out


def _replay_belady(trace: Trace, capacity: int, warmup: int) -> Result:
    start, cpu_start = time.perf_counter(), time.process_time()
    keys = trace.keys.tolist()
    sizes = trace.sizes.tolist()
    nexts = next_uses(trace.keys).tolist()
    never = len(keys)
    resident: dict[int, int] = {}  # id -> index of its next request
    heap: list[tuple[int, int]] = []  # (-next use, id); stale entries skipped lazily
    used = hits = byte_hits = 0
    push, pop = heapq.heappush, heapq.heappop
    for i, key in enumerate(keys):
        nxt = nexts[i]
        if key in resident:
            if i >= warmup:
                hits += 1
                byte_hits += sizes[key]
            resident[key] = nxt
            push(heap, (-nxt, key))
            if len(heap) > 4 * len(resident) + 1024:
                heap = [(-n, k) for k, n in resident.items()]
                heapq.heapify(heap)
            continue
        size = sizes[key]
        if nxt == never or size > capacity:
            continue  # never requested again: caching it cannot pay
        need = used + size - capacity
        victims: list[tuple[int, int]] = []
        freed = 0
        admit = True
        while freed < need:
            neg, victim = pop(heap)
            if resident.get(victim) != -neg:
                continue
            victims.append((neg, victim))
            if -neg <= nxt:
                # This victim is needed again before the newcomer: keep everything.
                admit = False
                break
            freed += sizes[victim]
        if not admit:
            for entry in victims:
                push(heap, entry)
            continue
        for _, victim in victims:
            del resident[victim]
            used -= sizes[victim]
        resident[key] = nxt
        used += size
        push(heap, (-nxt, key))
    return Result(hits, byte_hits, time.perf_counter() - start, time.process_time() - cpu_start)


def _replay_fixed(trace: Trace, capacity: int, warmup: int) -> Result:
    start, cpu_start = time.perf_counter(), time.process_time()
    counts = np.bincount(trace.keys[warmup:], minlength=len(trace.sizes))
    # The first request of an item is a compulsory miss; without this, one-off texts
    # would count as hits and the "bound" would beat Belady on one-off traces.
    _, first = np.unique(trace.keys, return_index=True)
    first_ids = trace.keys[first]
    counts[first_ids[first >= warmup]] -= 1
    sizes = trace.sizes
    density = counts / sizes
    chosen: list[int] = []
    free = capacity
    # Greedy knapsack by requests per byte; keep scanning for smaller items that fit.
    for item in np.argsort(-density, kind="stable").tolist():
        if counts[item] == 0:
            break
        if sizes[item] <= free:
            chosen.append(item)
            free -= int(sizes[item])
    picked = np.asarray(chosen, dtype=np.int64)
    hits = int(counts[picked].sum())
    byte_hits = int((counts[picked] * sizes[picked]).sum())
    return Result(hits, byte_hits, time.perf_counter() - start, time.process_time() - cpu_start)


def simulate(trace: Trace, fraction: float, policy: str) -> dict[str, Any]:
    """Replay ``trace`` through ``policy`` with a cache of ``fraction`` of its bytes."""
    capacity = max(1, int(trace.working_set_bytes * fraction))
    warmup = int(len(trace.keys) * WARMUP_FRACTION)
    if policy == LRU:
        result = _replay_online(trace, LRUPolicy(capacity), warmup)
    elif policy == TINYLFU:
        result = _replay_online(trace, WTinyLFUPolicy(capacity), warmup)
    elif policy == BELADY:
        result = _replay_belady(trace, capacity, warmup)
    elif policy == FIXED:
        result = _replay_fixed(trace, capacity, warmup)
    else:
        raise ValueError(f"unknown policy {policy!r}")
    measured = trace.keys[warmup:]
    requests = len(measured)
    request_bytes = int(trace.sizes[measured].sum())
    return {
        "trace": trace.name,
        "cache_fraction": fraction,
        "cache_bytes": capacity,
        "policy": policy,
        "requests": requests,
        "object_hit_ratio": result.hits / requests,
        "byte_hit_ratio": result.byte_hits / request_bytes,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
    }


def _simulate_job(job: tuple[Trace, float, str]) -> dict[str, Any]:
    return simulate(*job)


def run(quick: bool, jobs: int = 1, scale: Scale | None = None) -> list[dict[str, Any]]:
    """Simulate every trace x cache size x policy; one dict per combination.

    Keys: trace, cache_fraction, cache_bytes, policy, requests, object_hit_ratio,
    byte_hit_ratio, seconds (wall), cpu_seconds. ``jobs`` > 1 spreads the work over processes.
    ``scale`` overrides the quick/full sizes (``make bench`` uses a smaller one to fit its
    budget).
    """
    scale = scale or (QUICK if quick else FULL)
    work = [
        (trace, fraction, policy)
        for trace in make_traces(scale)
        for fraction in scale.cache_fractions
        for policy in POLICIES
    ]
    if jobs <= 1:
        return [_simulate_job(job) for job in work]
    # Longest jobs first (W-TinyLFU, then LRU, then Belady) so the pool ends evenly.
    cost = {TINYLFU: 0, LRU: 1, BELADY: 2, FIXED: 3}
    order = sorted(range(len(work)), key=lambda i: cost[work[i][2]])
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(_simulate_job, [work[i] for i in order]))
    rows: list[dict[str, Any]] = [{}] * len(work)
    for i, row in zip(order, done, strict=True):
        rows[i] = row
    return rows


# -- report -------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Hit-ratio table (object / byte %, per trace x cache size) and timing table."""
    policies = [p for p in POLICIES if any(r["policy"] == p for r in rows)]
    cells: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["trace"], row["cache_fraction"]), {})[row["policy"]] = row
    lines = [
        "Hit ratio, object % / byte % (first "
        f"{WARMUP_FRACTION:.0%} of each trace is warm-up and not counted).",
        "",
        "| trace | cache | " + " | ".join(policies) + " |",
        "|---|---|" + "---|" * len(policies),
    ]
    for (trace, fraction), by_policy in cells.items():
        values = []
        for policy in policies:
            row = by_policy.get(policy)
            values.append(
                "–"
                if row is None
                else f"{_pct(row['object_hit_ratio'])} / {_pct(row['byte_hit_ratio'])}"
            )
        lines.append(f"| {trace} | {fraction:.0%} | " + " | ".join(values) + " |")
    lines += [
        "",
        "| policy | wall time (s) | CPU time (s) | CPU µs per request |",
        "|---|---|---|---|",
    ]
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        seconds = sum(r["seconds"] for r in mine)
        cpu = sum(r.get("cpu_seconds", seconds) for r in mine)
        # Requests replayed include the warm-up share.
        replayed = sum(r["requests"] for r in mine) / (1 - WARMUP_FRACTION)
        lines.append(f"| {policy} | {seconds:.1f} | {cpu:.1f} | {1e6 * cpu / replayed:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small traces (smoke test)")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(quick=args.quick, jobs=args.jobs)
    scale = QUICK if args.quick else FULL
    report = (
        f"# Eviction policy simulation ({'quick' if args.quick else 'full'})\n\n"
        f"{scale.objects:,} objects (Zipf traces), {scale.requests:,} requests per trace, "
        f"sizes {MIN_SIZE // 1000} KB–{MAX_SIZE // 1_000_000} MB log-uniform, "
        f"cache = fraction of working-set bytes, seed {SEED}.\n\n" + render_markdown(rows)
    )
    report += f"\nTotal wall time {time.perf_counter() - started:.1f} s with {args.jobs} job(s).\n"
    print(report, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
