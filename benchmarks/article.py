"""Scenario 1, the article's claim: the same workload sent to the engine directly and through
voicecache, side by side in one run.

A fake EmotiVoice server (real HTTP, EmotiVoice's wire format, ``tests/fakes/emotivoice.py``)
answers every call after a fixed latency (0.8 s, the article's figure). The same request
sequence (``workload.py``: Zipf-popular game and stream lines plus personalized lines, Chinese
and English, four voices, four emotions) is replayed by the same closed-loop clients twice:
straight to the engine, then to a fresh voicecache (memory + disk tiers) in front of it.
Engine calls and characters come from the fake engine's own counters.

Usage: ``python -m benchmarks.article [--quick] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks import _harness as h
from benchmarks.workload import PROMPTS, Line, Workload, generate

ARTICLE = {"repeat_rate": 0.60, "calls_saved": 0.58, "tokens_left": 1 / 3, "latency_ms": 800}


@dataclass(frozen=True)
class Params:
    requests: int
    concurrency: int
    latency: float
    personalized_share: float = 0.34
    alpha: float = 1.0


FULL = Params(requests=1000, concurrency=32, latency=0.8)
QUICK = Params(requests=60, concurrency=8, latency=0.05)


@dataclass(frozen=True, slots=True)
class Sample:
    index: int
    seconds: float
    status: int
    cache: str  # X-Cache, or "ENGINE" for direct calls


async def replay(
    lines: Sequence[Line],
    concurrency: int,
    build: Callable[[Line], tuple[str, dict[str, Any]]],
) -> tuple[list[Sample], float]:
    """Send ``lines`` in order from ``concurrency`` closed-loop clients; time every request."""
    queue: asyncio.Queue[tuple[int, Line]] = asyncio.Queue()
    for item in enumerate(lines):
        queue.put_nowait(item)
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                index, line = queue.get_nowait()
                url, body = build(line)
                started = time.perf_counter()
                response = await client.post(url, json=body)
                elapsed = time.perf_counter() - started
                samples.append(
                    Sample(
                        index,
                        elapsed,
                        response.status_code,
                        response.headers.get("x-cache", "ENGINE"),
                    )
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return sorted(samples, key=lambda s: s.index), wall


def _side(samples: list[Sample], wall: float, stats: dict[str, int]) -> dict[str, Any]:
    by_status: dict[str, list[float]] = {}
    for sample in samples:
        by_status.setdefault(sample.cache, []).append(sample.seconds)
    misses = by_status.get("MISS", []) + by_status.get("COALESCED", [])
    return {
        "requests": len(samples),
        "errors": sum(1 for s in samples if s.status != 200),
        "wall_s": wall,
        "engine_calls": stats["calls"],
        "characters": stats["characters"],
        "by_status": {status: len(values) for status, values in sorted(by_status.items())},
        "latency_all": h.summary_ms([s.seconds for s in samples]),
        "latency_hits": h.summary_ms(by_status.get("HIT", [])),
        "latency_misses": h.summary_ms(misses),
        "samples_ms": [[round(1000 * s.seconds, 3), s.cache] for s in samples],
    }


def run(quick: bool = False, params: Params | None = None) -> dict[str, Any]:
    """Replay the workload directly and through voicecache; return both sides and ratios."""
    p = params or (QUICK if quick else FULL)
    if "emotivoice" not in h.available_engines():
        return {"skipped": "voicecache has no `emotivoice` engine on this commit"}
    workload: Workload = generate(
        p.requests, alpha=p.alpha, personalized_share=p.personalized_share
    )
    h.log(
        f"article: {p.requests} requests, {workload.distinct} distinct keys, "
        f"repeat rate {workload.repeat_rate:.1%}, engine latency {p.latency} s"
    )
    fake, engine_url = h.start_fake_emotivoice(p.latency, wait=False)
    gateway = None
    try:
        env = {
            "VOICECACHE_ENGINE": "emotivoice",
            "VOICECACHE_EMOTIVOICE_URL": engine_url,
            # As many engine calls in flight as clients: the gateway must not be the throttle.
            "VOICECACHE_EMOTIVOICE_MAX_CONCURRENCY": str(p.concurrency),
            "VOICECACHE_TIERS": "memory,disk",
        }
        gateway, gateway_url = h.start_gateway(env)
        fake.wait_http(f"{engine_url}/_fake/stats")

        def direct(line: Line) -> tuple[str, dict[str, Any]]:
            return f"{engine_url}/v1/audio/speech", {
                "input": line.text,
                "voice": line.voice,
                "prompt": PROMPTS[line.emotion],
                "language": "zh_us",
                "model": "emoti-voice",
                "response_format": "wav",
                "speed": 1.0,
            }

        def cached(line: Line) -> tuple[str, dict[str, Any]]:
            return f"{gateway_url}/v1/audio/speech", {
                "model": "emotivoice",
                "input": line.text,
                "voice": line.voice,
                "emotion": line.emotion,
                "response_format": "wav",
                "personalized": line.personalized,
            }

        sides: dict[str, Any] = {}
        for name, build in (("direct", direct), ("voicecache", cached)):
            h.fake_reset(engine_url, p.latency)
            h.log(f"article: clients -> {'engine' if name == 'direct' else 'voicecache -> engine'}")
            with h.on_cores(h.CLIENT_CORES):
                samples, wall = asyncio.run(replay(workload.lines, p.concurrency, build))
            sides[name] = _side(samples, wall, h.fake_stats(engine_url))
            h.log(
                f"article: {name}: {sides[name]['engine_calls']} engine calls, "
                f"p50 {sides[name]['latency_all']['p50']:.1f} ms, {wall:.1f} s"
            )
    finally:
        if gateway is not None:
            gateway.stop()
        fake.stop()
    direct_side, cache_side = sides["direct"], sides["voicecache"]
    return {
        "params": p.__dict__,
        "workload": {
            "requests": len(workload.lines),
            "distinct_keys": workload.distinct,
            "repeat_rate": workload.repeat_rate,
            "characters": workload.characters,
            "distinct_characters": workload.distinct_characters,
            "personalized": sum(1 for line in workload.lines if line.personalized),
            "catalog_entries": len({line.key for line in workload.lines if not line.personalized}),
        },
        "direct": direct_side,
        "voicecache": cache_side,
        "ratios": {
            "calls": cache_side["engine_calls"] / max(1, direct_side["engine_calls"]),
            "characters": cache_side["characters"] / max(1, direct_side["characters"]),
            "calls_over_minimum": cache_side["engine_calls"] / max(1, workload.distinct),
            "p50_all": cache_side["latency_all"]["p50"] / direct_side["latency_all"]["p50"],
            "p50_hit_vs_direct": cache_side["latency_hits"].get("p50", float("nan"))
            / direct_side["latency_all"]["p50"],
        },
    }


def render_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Not measured: {result['skipped']}.\n"
    w, d, c, r = result["workload"], result["direct"], result["voicecache"], result["ratios"]
    p = result["params"]
    out = [
        f"{w['requests']:,} requests from {p['concurrency']} closed-loop clients; engine latency "
        f"{p['latency'] * 1000:.0f} ms per call; {w['catalog_entries']} catalog keys drawn with "
        f"Zipf α = {p['alpha']} and {w['personalized']} personalized lines (names never repeat); "
        f"{w['distinct_keys']} distinct keys, so a perfect cache could answer "
        f"**{w['repeat_rate']:.1%}** of requests (the article: > 60 %).\n",
        h.table(
            ["", "clients → engine", "clients → voicecache → engine", "ratio", "article"],
            [
                [
                    "engine calls",
                    d["engine_calls"],
                    c["engine_calls"],
                    f"{r['calls']:.2f} (−{1 - r['calls']:.0%})",
                    "−58 %",
                ],
                [
                    "characters synthesized",
                    d["characters"],
                    c["characters"],
                    f"{r['characters']:.2f} (−{1 - r['characters']:.0%})",
                    "≈ ⅓ left",
                ],
                [
                    "engine calls / minimum (distinct keys)",
                    f"{d['engine_calls'] / w['distinct_keys']:.2f}",
                    f"{r['calls_over_minimum']:.2f}",
                    "",
                    "",
                ],
                ["wall time (s)", d["wall_s"], c["wall_s"], f"{c['wall_s'] / d['wall_s']:.2f}", ""],
                ["errors (non-200)", d["errors"], c["errors"], "", ""],
            ],
        ),
        "Latency seen by the clients (ms):\n",
        h.table(
            ["path", "requests", "p50", "p95", "p99", "mean"],
            [
                ["engine directly, all", *_lat(d["latency_all"])],
                ["voicecache, all", *_lat(c["latency_all"])],
                ["voicecache, hits", *_lat(c["latency_hits"])],
                ["voicecache, misses (MISS + COALESCED)", *_lat(c["latency_misses"])],
            ],
        ),
        "voicecache answers by `X-Cache`: "
        + ", ".join(f"{k} {v:,}" for k, v in c["by_status"].items())
        + f". Hit p50 / direct p50 = {r['p50_hit_vs_direct']:.3f}; "
        f"all p50 / direct p50 = {r['p50_all']:.3f}.\n",
    ]
    return "\n".join(out)


def _lat(stats: dict[str, float]) -> list[Any]:
    if not stats.get("n"):
        return [0, None, None, None, None]
    return [int(stats["n"]), stats["p50"], stats["p95"], stats["p99"], stats["mean"]]


def main(argv: Sequence[str] | None = None) -> int:
    return h.script_main(__doc__, run, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
