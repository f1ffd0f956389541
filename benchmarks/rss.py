"""Scenario 6, memory under load: the resident set size of one gateway process over a mixed
load, against its memory-tier budget.

The gateway (embedded eSpeak engine, tiers memory + disk, ``VOICECACHE_MEMORY_BYTES`` set
small so that the budget fills within the first seconds) serves closed-loop clients that mix
hits on a hot catalog, never-seen lines (misses: synthesize, encode, store) and new formats of
cached lines (transcodes). RSS is read from ``/proc/<pid>/status`` twice a second. The first
third of the run is warm-up; after it, RSS should stay flat: the slope is fitted by least
squares, after warm-up and over the last five minutes (the plateau test of issue #12: at most
``PLATEAU_MIB_PER_MIN`` over the last 5 minutes of a 15-minute run, ``--seconds 900``).

Usage: ``python -m benchmarks.rss [--quick] [--seconds N] [--out FILE.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import _harness as h
from benchmarks.workload import FIXED_EN, FIXED_ZH

MiB = 1024 * 1024
PLATEAU_WINDOW = 300.0  # seconds: the last five minutes
PLATEAU_MIB_PER_MIN = 0.3


@dataclass(frozen=True)
class Params:
    seconds: float
    memory_bytes: int
    concurrency: int
    tiers: str = "memory,disk"


FULL = Params(seconds=900.0, memory_bytes=8 * MiB, concurrency=8)
QUICK = Params(seconds=2.0, memory_bytes=4 * MiB, concurrency=4)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _request(rng: random.Random, serial: int) -> dict[str, Any]:
    roll = rng.random()
    hot = FIXED_EN + FIXED_ZH
    if roll < 0.5:  # hit on the hot catalog (after its first miss)
        text = hot[min(int(rng.paretovariate(1.0)) - 1, len(hot) - 1)]
        fmt = "wav"
    elif roll < 0.85:  # a line never seen before
        text = f"Round {serial} is over, {rng.choice(('great', 'nice', 'tough'))} game everyone!"
        fmt = rng.choice(("wav", "mp3", "flac"))
    else:  # a new format of a cached line: transcode from the canonical entry
        text = rng.choice(hot)
        fmt = rng.choice(("mp3", "flac", "pcm"))
    voice = "en" if text.isascii() else "cmn"
    return {"text": text, "voice": voice, "format": fmt}


async def load(url: str, params: Params, stop: threading.Event) -> dict[str, int]:
    counts: dict[str, int] = {}
    rng = random.Random(6)
    serial = 0

    async with httpx.AsyncClient(timeout=60) as client:

        async def worker() -> None:
            nonlocal serial
            while not stop.is_set():
                serial += 1
                response = await client.post(f"{url}/tts", json=_request(rng, serial))
                status = response.headers.get("x-cache", str(response.status_code))
                counts[status] = counts.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(params.concurrency)))
    return counts


def run(quick: bool = False, params: Params | None = None) -> dict[str, Any]:
    p = params or (QUICK if quick else FULL)
    env = {"VOICECACHE_TIERS": p.tiers, "VOICECACHE_MEMORY_BYTES": str(p.memory_bytes)}
    gateway, url = h.start_gateway(env)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        idle = rss_bytes(gateway.pid)
        h.log(
            f"rss: {p.seconds:.0f} s mixed load, memory tier {p.memory_bytes / MiB:.0f} MiB, "
            f"idle RSS {idle / MiB:.0f} MiB"
        )
        result: dict[str, dict[str, int]] = {}

        def drive() -> None:
            with h.on_cores(h.CLIENT_CORES):
                result["counts"] = asyncio.run(load(url, p, stop))

        thread = threading.Thread(target=drive)
        started = time.monotonic()
        thread.start()
        while (elapsed := time.monotonic() - started) < p.seconds:
            samples.append((elapsed, rss_bytes(gateway.pid)))
            time.sleep(0.5)
        stop.set()
        thread.join(60)
        final = rss_bytes(gateway.pid)
    finally:
        stop.set()
        gateway.stop()
    warm = [(t, r) for t, r in samples if t >= p.seconds / 3]
    values = np.array([r for _, r in warm], dtype=np.float64)
    slope = _slope(warm)
    # The last five minutes (or the part after warm-up, in a shorter run).
    last = [(t, r) for t, r in samples if t >= max(p.seconds / 3, p.seconds - PLATEAU_WINDOW)]
    last_slope = _slope(last)
    counts = result.get("counts", {})
    out = {
        "params": p.__dict__,
        "requests": sum(counts.values()),
        "by_cache": dict(sorted(counts.items())),
        "idle_rss": idle,
        "rss_at_warm": warm[0][1] if warm else None,
        "max_rss_after_warm": int(values.max()) if len(values) else None,
        "final_rss": final,
        "slope_mib_per_min": slope * 60 / MiB,
        "last_window_seconds": round(last[-1][0] - last[0][0], 1) if last else 0.0,
        "slope_last_5min_mib_per_min": last_slope * 60 / MiB,
        "plateau": bool(abs(last_slope * 60 / MiB) <= PLATEAU_MIB_PER_MIN),
        "samples": [(round(t, 2), r) for t, r in samples],
    }
    h.log(
        f"rss: {out['requests']:,} requests, max after warm-up "
        f"{(out['max_rss_after_warm'] or 0) / MiB:.0f} MiB, "
        f"slope {out['slope_mib_per_min']:.2f} MiB/min after warm-up, "
        f"{out['slope_last_5min_mib_per_min']:.2f} MiB/min over the last "
        f"{out['last_window_seconds']:.0f} s (plateau: ≤ {PLATEAU_MIB_PER_MIN} MiB/min: "
        f"{'yes' if out['plateau'] else 'NO'})"
    )
    return out


def _slope(samples: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in bytes per second."""
    if len(samples) < 2:
        return float("nan")
    times = np.array([t for t, _ in samples])
    values = np.array([r for _, r in samples], dtype=np.float64)
    return float(np.polyfit(times, values, 1)[0])


def render_markdown(result: dict[str, Any]) -> str:
    p = result["params"]

    def mib(value: int | None) -> str:
        return "–" if value is None else f"{value / MiB:.0f} MiB"

    rows = [
        [
            "load",
            f"{p['seconds']:.0f} s, {p['concurrency']} closed-loop clients, "
            f"{result['requests']:,} requests",
        ],
        ["answers by X-Cache", ", ".join(f"{k} {v:,}" for k, v in result["by_cache"].items())],
        [
            "tiers; memory-tier budget (`VOICECACHE_MEMORY_BYTES`)",
            f"`{p.get('tiers')}`; {mib(p['memory_bytes'])}",
        ],
        ["RSS idle, before load", mib(result["idle_rss"])],
        ["RSS at end of warm-up (first third)", mib(result["rss_at_warm"])],
        ["max RSS after warm-up", mib(result["max_rss_after_warm"])],
        ["RSS at the end", mib(result["final_rss"])],
        ["RSS slope after warm-up (least squares)", f"{result['slope_mib_per_min']:+.2f} MiB/min"],
        [
            f"RSS slope over the last {result['last_window_seconds']:.0f} s "
            f"(plateau: ≤ {PLATEAU_MIB_PER_MIN} MiB/min)",
            f"{result['slope_last_5min_mib_per_min']:+.2f} MiB/min "
            f"({'plateau' if result['plateau'] else 'still rising'})",
        ],
        ["≈ RSS growth per never-seen line after warm-up", _per_miss(result)],
    ]
    note = (
        f"This run: {p['seconds']:.0f} s of load (the plateau test runs 900 s, the default of "
        "`make bench` and of `python -m benchmarks.rss`; its last 5 minutes must rise at most "
        f"{PLATEAU_MIB_PER_MIN} MiB/min). "
        "The mix: half hits on a hot catalog, 35 % never-seen lines (engine + encode + store), "
        "15 % new formats of cached lines (transcode). The budget is set small so that it fills "
        "during warm-up; RSS beyond idle + budget is the interpreter's and allocator's share.\n"
    )
    return note + "\n" + h.table(["", "value"], rows)


def _per_miss(result: dict[str, Any]) -> str:
    """Growth after warm-up ÷ misses after warm-up (misses assumed evenly spread)."""
    misses = result["by_cache"].get("MISS", 0) * 2 / 3
    if not misses or result["rss_at_warm"] is None:
        return "–"
    return f"{(result['final_rss'] - result['rss_at_warm']) / misses / 1024:.1f} KiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.seconds:
        params = Params(args.seconds, params.memory_bytes, params.concurrency)
    result = run(params=params)
    print(render_markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
