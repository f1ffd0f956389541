"""Scenario 2, the thundering herd: N requests for one new line arriving together.

Every request opens its own connection (a raw asyncio HTTP/1.1 client: cheap enough that one
core can put 10,000 requests on the wire in about a second) and all are started at once. With
the shared Redis tier on main (``redis`` in ``TIER_BUILDERS``), the requests are split over two
gateway replicas sharing one redis-server started for the bench; otherwise one replica.

Reported: engine calls (the goal is exactly 1), answers by ``X-Cache``, and how long the
waiters took *after the engine answered*: the leader's response marks the moment, and every
other response is timed from it.

Usage: ``python -m benchmarks.herd [--quick] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from benchmarks import _harness as h


@dataclass(frozen=True)
class Params:
    requests: int
    latency: float


FULL = Params(requests=10_000, latency=0.8)
QUICK = Params(requests=200, latency=0.2)


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # when the request was written, seconds since the start
    done: float  # when the whole response was read
    status: int
    cache: str
    replica: int


async def _one(url: str, body: bytes, start: float, replica: int) -> Answer:
    parts = urlsplit(url)
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except OSError:
        return Answer(time.perf_counter() - start, time.perf_counter() - start, 0, "CONNECT", -1)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    writer.write(request)
    await writer.drain()
    sent = time.perf_counter() - start
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        await reader.readexactly(int(headers.get("content-length", "0")))
        cache = headers.get("x-cache", "-")
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        status, cache = 0, "ERROR"
    done = time.perf_counter() - start
    writer.close()
    return Answer(sent, done, status, cache, replica)


async def stampede(urls: Sequence[str], body: bytes, requests: int) -> list[Answer]:
    """``requests`` POSTs of ``body``, all started together, spread over ``urls``."""
    start = time.perf_counter()
    tasks = [_one(urls[i % len(urls)], body, start, i % len(urls)) for i in range(requests)]
    return list(await asyncio.gather(*tasks))


def run(quick: bool = False, params: Params | None = None) -> dict[str, Any]:
    p = params or (QUICK if quick else FULL)
    if "emotivoice" not in h.available_engines():
        return {"skipped": "voicecache has no `emotivoice` engine on this commit"}
    shared = "redis" in h.available_tiers() and h.have("redis-server")
    replicas = 2 if shared else 1
    h.raise_fd_limit()
    fake, engine_url = h.start_fake_emotivoice(p.latency, wait=False)
    redis = None
    gateways: list[h.Process] = []
    try:
        env = {
            "VOICECACHE_ENGINE": "emotivoice",
            "VOICECACHE_EMOTIVOICE_URL": engine_url,
            "VOICECACHE_TIERS": "memory",
            # Room for every waiter: the herd must be coalesced, not shed by the engine queue.
            "VOICECACHE_ENGINE_MAX_QUEUE": str(p.requests + 10),
        }
        if shared:
            from tests.servers import RedisServer

            redis = RedisServer().start()
            env |= {"VOICECACHE_TIERS": "memory,redis", "VOICECACHE_REDIS_URL": redis.url}
        urls = []
        for _ in range(replicas):  # start together, then wait for all
            process, url = h.start_gateway(env, wait=False)
            gateways.append(process)
            urls.append(url)
        for process, url in zip(gateways, urls, strict=True):
            process.wait_http(f"{url}/healthz")
        fake.wait_http(f"{engine_url}/_fake/stats")
        urls = [f"{url}/v1/audio/speech" for url in urls]
        text = f"A brand new line nobody asked for yet, number {uuid.uuid4().hex[:8]}."
        body = json.dumps(
            {"model": "emotivoice", "input": text, "voice": "8051", "response_format": "wav"}
        ).encode()
        h.fake_reset(engine_url, p.latency)
        h.log(f"herd: {p.requests:,} requests for one new line over {replicas} replica(s)")
        with h.on_cores(h.CLIENT_CORES):
            answers = asyncio.run(stampede(urls, body, p.requests))
        stats = h.fake_stats(engine_url)
        # distlock.py logs this when a replica gave up waiting for another one's fill.
        logs = [process.log_text() for process in gateways]
        lock_timeouts = sum(text.count("for another replica to fill") for text in logs)
        warnings = _warnings(logs)
    finally:
        for process in gateways:
            process.stop()
        fake.stop()
        if redis is not None:
            redis.close()
    ok = [a for a in answers if a.status == 200]
    by_cache: dict[str, int] = {}
    for answer in answers:
        by_cache[answer.cache] = by_cache.get(answer.cache, 0) + 1
    leaders = [a for a in ok if a.cache == "MISS"]
    engine_answered = min((a.done for a in leaders), default=float("nan"))
    waiters = [a for a in ok if a.cache != "MISS"]
    after = [max(0.0, a.done - engine_answered) for a in waiters]
    result = {
        "params": p.__dict__,
        "replicas": replicas,
        "tiers": env["VOICECACHE_TIERS"],
        "engine_calls": stats["calls"],
        "lock_wait_timeouts": lock_timeouts,
        "gateway_warnings": warnings,
        "by_cache": dict(sorted(by_cache.items())),
        "errors": len(answers) - len(ok),
        "all_sent_s": max(a.sent for a in answers),
        "engine_answered_s": engine_answered,
        "last_answer_s": max(a.done for a in answers),
        "sent_before_engine_answered": sum(1 for a in answers if a.sent < engine_answered),
        "latency_all": h.summary_ms([a.done - a.sent for a in ok]),
        "waiters_after_engine": h.summary_ms(after),
    }
    h.log(
        f"herd: {result['engine_calls']} engine call(s), {result['by_cache']}, "
        f"last answer {result['last_answer_s']:.2f} s"
    )
    return result


def _warnings(logs: Sequence[str]) -> list[tuple[str, int]]:
    """Distinct warning/error lines of the gateways' logs (hex digests masked), most common
    first: they say why a herd was not coalesced (lock waits, Redis timeouts, breakers)."""
    counts: dict[str, int] = {}
    for text in logs:
        for line in text.splitlines():
            if any(word in line.lower() for word in ("warn", "error", "timeout", "circuit")):
                masked = re.sub(r"[0-9a-f]{16,}", "…", line.strip())[:200]
                counts[masked] = counts.get(masked, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])[:8]


def render_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Not measured: {result['skipped']}.\n"
    p, w = result["params"], result["waiters_after_engine"]
    note = (
        "two replicas sharing one redis-server"
        if result["replicas"] == 2
        else "one replica (the shared Redis tier is not on main yet)"
    )
    rows = [
        ["requests", p["requests"]],
        ["gateway replicas", f"{result['replicas']} ({note}); tiers `{result['tiers']}`"],
        ["engine latency", f"{p['latency'] * 1000:.0f} ms"],
        ["**engine calls** (goal: exactly 1)", f"**{result['engine_calls']}**"],
        ["answers by X-Cache", ", ".join(f"{k} {v:,}" for k, v in result["by_cache"].items())],
        ["errors (non-200 or connection failures)", result["errors"]],
        ["all requests written after", f"{result['all_sent_s']:.2f} s"],
        ["requests written before the engine answered", result["sent_before_engine_answered"]],
        ["engine answered (leader's response) at", f"{result['engine_answered_s']:.2f} s"],
        ["last response at", f"{result['last_answer_s']:.2f} s"],
        [
            "waiters after the engine answered: p50 / p99 / max",
            f"{_ms(w.get('p50'))} / {_ms(w.get('p99'))} / {_ms(w.get('max'))}",
        ],
        [
            "all requests, send → response: p50 / p99",
            f"{_ms(result['latency_all'].get('p50'))} / {_ms(result['latency_all'].get('p99'))}",
        ],
    ]
    table = h.table(["", "value"], rows)
    if result["engine_calls"] > 1:
        why = (
            f"{result['lock_wait_timeouts']} replica(s) logged that they gave up waiting for "
            "the other replica's fill (`VOICECACHE_LOCK_WAIT`, 35 s by default) and called the "
            "engine themselves: the leader's answer came later than that"
            if result.get("lock_wait_timeouts")
            else "misses are coalesced within each gateway process, but the cross-replica "
            "fill lock (`distlock.py`) did not make the other replica wait (see the gateways' "
            "warnings below, if any)"
        )
        table += f"\n**{result['engine_calls']} engine calls, not 1**: {why}.\n"
    if result.get("gateway_warnings"):
        table += "\nWarnings the gateways logged during the herd (count × line):\n\n"
        table += "".join(f"- {n} × `{line}`\n" for line, n in result["gateway_warnings"])
    return table


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    return h.script_main(__doc__, run, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
