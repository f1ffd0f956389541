"""Scenario 7, streaming: time to the first audio byte of a miss, streamed and whole.

Two gateways (`voicecache serve`, pinned to the server core): one in front of a streaming
OpenAI-compatible stand-in (`tests.fakes.openai_tts`: chunked transfer, first chunk 100 ms
after the request, then one chunk of 0.25 s of audio every 250 ms, like a real-time engine),
one with the embedded eSpeak engine. The client (this process, on the other core) measures
from sending each request to receiving the first byte of its body, and to the last byte:

- the stand-in directly (the engine's own first byte), then through voicecache: a whole miss
  (no `stream_format`), a streamed miss (`"stream_format": "audio"` and `"sse"`), a second
  identical stream that joins the first one 0.5 s late (one engine call, it replays what was
  made and follows live), and a streamed memory hit;
- eSpeak with a long text (~1,000 characters, about a minute of audio): a whole miss and a
  streamed `/tts` miss.

Every round uses new lines, and rounds alternate the paths measured. Goal: a streamed miss's
first byte within 50 ms of the engine's own first byte. `--quick` (the smoke test) runs one
round with the stand-in's chunks 20 ms apart: its numbers mean nothing.

Usage: ``python -m benchmarks.streaming [--quick] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks import _harness as h

FIRST_CHUNK_S = 0.1
CHUNK_INTERVAL_S = 0.25
JOIN_AFTER_S = 0.5
QUICK_TIMING = (0.02, 0.02, 0.1)  # first chunk, interval, join after: a smoke run
GOAL_MS = 50.0
# About 2.8 s of stand-in audio (47 characters): twelve chunks of 0.25 s.
LINE = "Streamed line {n}, made for the bench {tag}."
LONG_TEXT = (
    "Welcome back to the stream, everyone. Tonight we are going to finish the castle, "
    "then we will try the hardest level again, and if we win, the next round is on me. "
) * 6


@dataclass(frozen=True)
class Timing:
    first: float  # seconds from the request to the first body byte
    last: float  # ... to the last one
    cache: str  # X-Cache ("-" directly to the engine)


async def timed(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Timing:
    started = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {await response.aread()!r}")
        async for _ in response.aiter_raw():
            if first is None:
                first = time.perf_counter() - started
    last = time.perf_counter() - started
    return Timing(first if first is not None else last, last, response.headers.get("x-cache", "-"))


def speech(text: str, stream: str | None = "audio") -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tts-1", "input": text, "voice": "alloy"}
    body["response_format"] = "pcm"
    if stream is not None:
        body["stream_format"] = stream
    return body


async def openai_round(
    client: httpx.AsyncClient, engine: str, gateway: str, n: int, tag: str, join_after: float
) -> dict[str, Timing]:
    """One round against the stand-in; the order of the misses alternates between rounds."""
    speech_url = f"{gateway}/v1/audio/speech"
    timings: dict[str, Timing] = {}
    lines = {key: LINE.format(n=f"{n}{key}", tag=tag) for key in ("w", "s", "e", "c")}

    async def direct() -> None:
        timings["engine"] = await timed(client, f"{engine}/v1/audio/speech", speech(lines["w"]))

    async def whole() -> None:
        timings["whole miss"] = await timed(client, speech_url, speech(lines["w"], None))

    async def streamed() -> None:
        timings["streamed miss"] = await timed(client, speech_url, speech(lines["s"]))

    async def sse() -> None:
        timings["streamed miss, SSE"] = await timed(client, speech_url, speech(lines["e"], "sse"))

    steps = [direct, whole, streamed, sse]
    for step in steps if n % 2 == 0 else reversed(steps):
        await step()
    # A stream and an identical one 0.5 s behind it: one engine call, the second follows live.
    leader = asyncio.ensure_future(timed(client, speech_url, speech(lines["c"])))
    await asyncio.sleep(join_after)
    timings["coalesced streamed waiter"] = await timed(client, speech_url, speech(lines["c"]))
    await leader
    timings["streamed hit (memory)"] = await timed(client, speech_url, speech(lines["s"]))
    return timings


async def espeak_round(client: httpx.AsyncClient, gateway: str, n: int) -> dict[str, Timing]:
    tts = f"{gateway}/tts"
    timings: dict[str, Timing] = {}
    text = f"Round {n} {uuid.uuid4().hex[:6]}. {LONG_TEXT}"
    bodies = {
        "whole miss": {"text": f"Whole. {text}", "voice": "en"},
        "streamed miss": {"text": f"Streamed. {text}", "voice": "en", "stream": True},
    }
    names = list(bodies) if n % 2 == 0 else list(reversed(bodies))
    for name in names:
        timings[name] = await timed(client, tts, bodies[name])
    return timings


def summarize(rounds: list[dict[str, Timing]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        firsts = [r[name].first for r in rounds]
        lasts = [r[name].last for r in rounds]
        out[name] = {
            "first_ms": h.summary_ms(firsts),
            "last_ms": h.summary_ms(lasts),
            "x_cache": sorted({r[name].cache for r in rounds}),
        }
    return out


async def measure(
    openai_gw: str, engine: str, espeak_gw: str, rounds: int, join_after: float
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=120) as client:
        # Warm-up: connections, the gateways' first plan and the engine clients.
        await openai_round(client, engine, openai_gw, -1, tag, join_after)
        await espeak_round(client, espeak_gw, -1)
        stand_in = [
            await openai_round(client, engine, openai_gw, n, tag, join_after) for n in range(rounds)
        ]
        espeak = [await espeak_round(client, espeak_gw, n) for n in range(rounds)]
    return {"openai": summarize(stand_in), "espeak": summarize(espeak)}


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 1 if quick else 7
    first_chunk, interval, join_after = (
        QUICK_TIMING if quick else (FIRST_CHUNK_S, CHUNK_INTERVAL_S, JOIN_AFTER_S)
    )
    port = h.free_port()
    engine_url = f"http://{h.LOOPBACK}:{port}"
    command = [h.PYTHON, "-m", "tests.fakes.openai_tts", "--port", str(port)]
    fake = h.Process("openai-fake", h.pinned(command, h.CLIENT_CORES)).start()
    gateways: list[h.Process] = []
    try:
        openai_gw, openai_url = h.start_gateway(
            {"VOICECACHE_ENGINE": "openai", "VOICECACHE_OPENAI_BASE_URL": engine_url},
            wait=False,
        )
        gateways.append(openai_gw)
        espeak_gw, espeak_url = h.start_gateway({}, wait=False)
        gateways.append(espeak_gw)
        # Generous: three interpreters start at once on a shared, possibly busy, machine.
        fake.wait_http(f"{engine_url}/_fake/stats", timeout=120)
        openai_gw.wait_http(f"{openai_url}/healthz", timeout=120)
        espeak_gw.wait_http(f"{espeak_url}/healthz", timeout=120)
        controls = {"first_chunk_delay_s": first_chunk, "chunk_interval_s": interval}
        h.http_json(f"{engine_url}/_fake/controls", controls, method="POST")
        h.log(f"streaming: {rounds} round(s) against the stand-in and eSpeak")
        with h.on_cores(h.CLIENT_CORES):
            result = asyncio.run(measure(openai_url, engine_url, espeak_url, rounds, join_after))
        calls = h.fake_stats(engine_url)["calls"]
    finally:
        for process in (*gateways, fake):
            process.stop()
    # Per round: direct, whole, streamed, SSE, and one shared call for the coalesced pair.
    result["stand_in_calls"] = {"measured": calls, "expected": 5 * (rounds + 1)}
    result["params"] = {
        "rounds": rounds,
        "first_chunk_s": first_chunk,
        "chunk_interval_s": interval,
        "join_after_s": join_after,
        "long_text_chars": len(LONG_TEXT),
    }
    engine_first = result["openai"]["engine"]["first_ms"]["p50"]
    streamed_first = result["openai"]["streamed miss"]["first_ms"]["p50"]
    result["goal"] = {
        "engine_first_ms": engine_first,
        "streamed_first_ms": streamed_first,
        "overhead_ms": streamed_first - engine_first,
        "goal_ms": GOAL_MS,
        "met": streamed_first - engine_first <= GOAL_MS,
    }
    return result


def _rows(section: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, s in section.items():
        first, last = s["first_ms"], s["last_ms"]
        rows.append(
            [
                name,
                f"{h.fmt(first['p50'])} ms",
                f"{h.fmt(first['max'])} ms",
                f"{h.fmt(last['p50'])} ms",
                ", ".join(s["x_cache"]),
            ]
        )
    return rows


def render_markdown(result: dict[str, Any]) -> str:
    p, goal, calls = result["params"], result["goal"], result["stand_in_calls"]
    headers = ["path", "first byte p50", "first byte max", "last byte p50", "X-Cache"]
    return "\n".join(
        [
            "Time from sending a request to its first and last audio byte, median and maximum "
            f"over {p['rounds']} rounds (new lines each round, the order of paths alternating). "
            f"The OpenAI-compatible stand-in streams chunked PCM: its first chunk "
            f"{p['first_chunk_s'] * 1000:.0f} ms after the request, then one every "
            f"{p['chunk_interval_s'] * 1000:.0f} ms (0.25 s of audio each, ~2.8 s per line). "
            f"The coalesced waiter sends the same line {p['join_after_s'] * 1000:.0f} ms after "
            f"a first stream; its times count from its own request. Stand-in calls: "
            f"{calls['measured']} (expected {calls['expected']}: one per miss, one for each "
            "coalesced pair).\n",
            "**OpenAI-compatible stand-in**\n",
            h.table(headers, _rows(result["openai"])),
            f"**eSpeak, a long text ({p['long_text_chars']:,} characters, `/tts` WAV)**\n",
            h.table(headers, _rows(result["espeak"])),
            f"Goal: a streamed miss's first byte within {goal['goal_ms']:.0f} ms of the "
            f"engine's own: {goal['streamed_first_ms']:.1f} ms vs {goal['engine_first_ms']:.1f} "
            f"ms, **{goal['overhead_ms']:+.1f} ms** ({'met' if goal['met'] else 'NOT met'}).\n",
            "Formats: `pcm` and `wav` stream chunk by chunk, `opus` by Ogg page (about one per "
            "second of audio), `flac` and `mp3` once the audio is complete (README, Streaming).\n",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    return h.script_main(__doc__, run, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
