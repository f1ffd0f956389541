"""Scenario 7, segments and templates: characters the engine is paid for with segments off and
on, against the exact-match minimum, and the time to first byte of a six-sentence text.

The workload is the article's (``workload.py``: Zipf-popular catalog lines and personalized
lines whose names never repeat) with long texts mixed in: announcements of six sentences
(Chinese and English; three stock sentences shared between scripts, three of their own),
asked as written, with one sentence changed or added (half the time a sentence never seen
before), or re-ordered, as a stream or a game re-sends its scripts. The
personalized lines' patterns (``PERSONAL_EN``, ``PERSONAL_ZH``) are the ``[[templates]]``.

The same request sequence goes through voicecache to a fake EmotiVoice (real HTTP, counting the
characters it is asked to speak) twice, each time into an empty cache: segments off (exact
caching: one engine call per distinct text) and segments on (``VOICECACHE_SEGMENTS=sentence``
plus the templates). The exact-match minimum is what a perfect exact cache pays: the
characters of the distinct (text, voice, emotion) keys. The target is segments on ≤ 0.6× that.

Time to first byte: a fake EmotiVoice whose calls take 0.3 s + 12 ms per character (a
40-character sentence about the article's 0.8 s, a six-sentence text about 3 s), four calls at
once; six-sentence texts never seen before, asked whole, whole and streamed (EmotiVoice
itself answers whole files), in segments, and in segments streamed.

Usage: ``python -m benchmarks.segments [--quick] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks import _harness as h
from benchmarks.article import replay
from benchmarks.workload import PERSONAL_EN, PERSONAL_ZH, VOICES, Line, generate
from voicecache.cache.segments import Template, split_text
from voicecache.cache.segments.templates import match_any
from voicecache.keys import normalize_text

SENTENCES_EN = (
    "Welcome back to the evening stream, everyone.",
    "Tonight we are playing the new desert map.",
    "The tournament starts at eight o'clock sharp.",
    "Remember to stay hydrated and take breaks.",
    "Our team has won three matches in a row.",
    "The next giveaway happens at the top of the hour.",
    "Please keep the chat friendly and respectful.",
    "Moderators will remove spam without warning.",
    "The season pass is on sale until Sunday.",
    "Double experience is active for the whole weekend.",
    "Server maintenance begins tomorrow at noon.",
    "Expect about thirty minutes of downtime.",
    "New skins arrive in the shop next week.",
    "The ranked ladder resets at the end of the month.",
    "Thank you all for the amazing support.",
    "See you tomorrow for another session.",
)
SENTENCES_ZH = (
    "欢迎大家回到今晚的直播间。",
    "今晚我们要玩全新的沙漠地图。",
    "比赛将在八点整准时开始。",
    "记得多喝水，适当休息一下。",
    "我们的队伍已经连赢三场了。",
    "下一轮抽奖将在整点进行。",
    "请大家在弹幕里友善发言。",
    "房管会直接清理刷屏的内容。",
    "赛季通行证优惠到周日结束。",
    "整个周末都有双倍经验活动。",
    "服务器明天中午开始维护。",
    "预计停机时间大约三十分钟。",
    "新皮肤下周就会上架商店。",
    "排位天梯将在月底重置。",
    "感谢大家一直以来的支持。",
    "我们明天同一时间再见。",
)
# The personalized lines' patterns are exactly `[[templates]]` patterns ("{name}" slots).
TEMPLATES = [{"pattern": pattern} for pattern in (*PERSONAL_EN, *PERSONAL_ZH)]
TTFB_CONCURRENCY = 4  # engine calls at once in the TTFB part


@dataclass(frozen=True)
class Params:
    requests: int  # the article's lines
    long_texts: int
    scripts: int
    concurrency: int
    ttfb_rounds: int
    # The engine's cost in the TTFB part: seconds per call and per character.
    ttfb_call_s: float = 0.3
    ttfb_char_s: float = 0.012


FULL = Params(requests=1000, long_texts=300, scripts=12, concurrency=16, ttfb_rounds=3)
QUICK = Params(60, 20, 4, 4, ttfb_rounds=1, ttfb_call_s=0.05, ttfb_char_s=0.002)


def fresh_sentence(english: bool, serial: int) -> str:
    """A sentence nobody has asked before (news of the day: a match number, a server)."""
    if english:
        return f"Match {serial} begins on server {serial % 7 + 1} in a few minutes."
    return f"第{serial}场比赛即将在{serial % 7 + 1}号服务器开始。"


def long_texts(count: int, scripts: int, rng: random.Random) -> list[Line]:
    """Six-sentence announcements, Zipf-popular, each bound to a voice and an emotion: three
    stock sentences (shared with other scripts) and three of its own. Asked as written (40 %),
    with one sentence changed (30 %) or one added (15 %), each time half a stock sentence and
    half one never seen before, or re-ordered (15 %)."""
    serials = iter(range(1, 1_000_000))
    catalog: list[tuple[list[str], bool, str, str]] = []
    for index in range(scripts):
        english = index % 2 == 0
        bank = SENTENCES_EN if english else SENTENCES_ZH
        own = [fresh_sentence(english, next(serials)) for _ in range(3)]
        sentences = rng.sample(bank, 3) + own
        rng.shuffle(sentences)
        catalog.append((sentences, english, rng.choice(VOICES), rng.choice(("neutral", "happy"))))
    weights = [rank**-1.0 for rank in range(1, scripts + 1)]
    lines: list[Line] = []
    for _ in range(count):
        script, english, voice, emotion = rng.choices(catalog, weights)[0]
        sentences = list(script)
        bank = SENTENCES_EN if english else SENTENCES_ZH
        other = rng.choice(bank) if rng.random() < 0.5 else fresh_sentence(english, next(serials))
        roll = rng.random()
        if roll < 0.30:
            sentences[rng.randrange(6)] = other
        elif roll < 0.45:
            sentences.insert(rng.randrange(7), other)
        elif roll < 0.60:
            rng.shuffle(sentences)
        lines.append(Line((" " if english else "").join(sentences), voice, emotion))
    return lines


def workload(p: Params) -> tuple[list[Line], list[Line], list[Line]]:
    """The article's lines with the long texts mixed in at random places (seeded): all the
    requests in order, the article's, the long texts."""
    rng = random.Random(14)
    article = list(generate(p.requests, personalized_share=0.34).lines)
    long = long_texts(p.long_texts, p.scripts, rng)
    lines = list(article)
    for line in long:
        lines.insert(rng.randrange(len(lines) + 1), line)
    return lines, article, long


def minimums(lines: Sequence[Line]) -> dict[str, int]:
    """Characters a perfect exact cache pays (distinct keys), and a perfect segment cache
    (distinct segments and template parts, by voice and emotion)."""
    exact = {(normalize_text(line.text), line.voice, line.emotion) for line in lines}
    templates = tuple(Template.compile(t["pattern"]) for t in TEMPLATES)
    pieces: set[tuple[str, str, str]] = set()
    for text, voice, emotion in exact:
        parts = match_any(templates, text, voice=voice, engine="emotivoice", emotion=emotion)
        for piece in parts or split_text(text):
            pieces.add((piece.text, voice, emotion))
    return {
        "exact": sum(len(text) for text, _, _ in exact),
        "segments": sum(len(text) for text, _, _ in pieces),
        "distinct_keys": len(exact),
    }


def _savings(p: Params, lines: list[Line]) -> dict[str, Any]:
    fake, engine_url = h.start_fake_emotivoice(0.0, wait=False)
    sides: dict[str, Any] = {}
    try:
        fake.wait_http(f"{engine_url}/_fake/stats")
        for side, extra in (
            ("off", {}),
            (
                "on",
                {"VOICECACHE_SEGMENTS": "sentence", "VOICECACHE_TEMPLATES": json.dumps(TEMPLATES)},
            ),
        ):
            h.fake_reset(engine_url, 0.02)
            env = {
                "VOICECACHE_ENGINE": "emotivoice",
                "VOICECACHE_EMOTIVOICE_URL": engine_url,
                "VOICECACHE_EMOTIVOICE_MAX_CONCURRENCY": str(p.concurrency),
                "VOICECACHE_TIERS": "memory,disk",
                **extra,
            }
            gateway, gateway_url = h.start_gateway(env)
            try:

                def body(line: Line, url: str = gateway_url) -> tuple[str, dict[str, Any]]:
                    return f"{url}/v1/audio/speech", {
                        "model": "emotivoice",
                        "input": line.text,
                        "voice": line.voice,
                        "emotion": line.emotion,
                        "response_format": "wav",
                        "personalized": line.personalized,
                    }

                h.log(f"segments: {len(lines)} requests, segments {side}")
                with h.on_cores(h.CLIENT_CORES):
                    samples, wall = asyncio.run(replay(lines, p.concurrency, body))
            finally:
                gateway.stop()
            stats = h.fake_stats(engine_url)
            by_status: dict[str, int] = {}
            for sample in samples:
                by_status[sample.cache] = by_status.get(sample.cache, 0) + 1
            sides[side] = {
                "engine_calls": stats["calls"],
                "characters": stats["characters"],
                "errors": sum(1 for s in samples if s.status != 200),
                "by_status": dict(sorted(by_status.items())),
                "wall_s": wall,
            }
            h.log(f"segments: {side}: {stats['characters']:,} characters, {stats['calls']} calls")
    finally:
        fake.stop()
    return sides


def _ttfb_texts(rounds: int) -> list[str]:
    """Six-sentence texts no other request has asked, one per (variant, round)."""
    texts = []
    for index in range(4 * rounds):
        texts.append(
            " ".join(
                f"Round {index * 6 + n} starts at gate {n + 3}, take your seats." for n in range(6)
            )
        )
    return texts


def _first_byte(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, float, str]:
    """(seconds to the first body byte, seconds to the last, X-Cache)."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - started
        cache = response.headers.get("x-cache", "")
    return first or float("nan"), time.perf_counter() - started, cache


VARIANTS = (
    ("whole", {"segments": "off"}),
    ("whole, streamed", {"segments": "off", "stream_format": "audio"}),
    ("segments", {"segments": "sentence"}),
    ("segments, streamed", {"segments": "sentence", "stream_format": "audio"}),
)


def _ttfb(p: Params) -> dict[str, Any]:
    fake, engine_url = h.start_fake_emotivoice(p.ttfb_call_s)
    gateway = None
    try:
        h.http_json(
            f"{engine_url}/_fake/controls", {"latency_per_char_s": p.ttfb_char_s}, method="POST"
        )
        env = {
            "VOICECACHE_ENGINE": "emotivoice",
            "VOICECACHE_EMOTIVOICE_URL": engine_url,
            "VOICECACHE_EMOTIVOICE_MAX_CONCURRENCY": str(TTFB_CONCURRENCY),
            "VOICECACHE_TIERS": "memory",
        }
        gateway, url = h.start_gateway(env)
        texts = iter(_ttfb_texts(p.ttfb_rounds))
        rows: dict[str, list[tuple[float, float, str]]] = {name: [] for name, _ in VARIANTS}
        with httpx.Client(timeout=120) as client:
            for _ in range(p.ttfb_rounds):
                for name, fields in VARIANTS:
                    body = {"model": "emotivoice", "input": next(texts), "voice": "8051",
                            "response_format": "wav", **fields}  # fmt: skip
                    rows[name].append(_first_byte(client, f"{url}/v1/audio/speech", body))
                    h.log(f"segments: ttfb {name}: {rows[name][-1][0] * 1000:.0f} ms")
        characters = len(_ttfb_texts(1)[0])
    finally:
        if gateway is not None:
            gateway.stop()
        fake.stop()
    return {
        "call_s": p.ttfb_call_s,
        "char_s": p.ttfb_char_s,
        "concurrency": TTFB_CONCURRENCY,
        "characters": characters,
        "rows": {
            name: {
                "first_ms": statistics.median(r[0] for r in values) * 1000,
                "last_ms": statistics.median(r[1] for r in values) * 1000,
                "x_cache": values[0][2],
                "rounds": len(values),
            }
            for name, values in rows.items()
        },
    }


def run(quick: bool = False, params: Params | None = None) -> dict[str, Any]:
    p = params or (QUICK if quick else FULL)
    if "emotivoice" not in h.available_engines():
        return {"skipped": "voicecache has no `emotivoice` engine on this commit"}
    lines, article, long = workload(p)
    floor = minimums(lines)
    h.log(
        f"segments: {len(lines)} requests ({p.long_texts} long texts), exact-match minimum "
        f"{floor['exact']:,} characters"
    )
    sides = _savings(p, lines)
    return {
        "params": p.__dict__,
        "workload": {
            "requests": len(lines),
            "long_texts": p.long_texts,
            "personalized": sum(1 for line in lines if line.personalized),
            "characters": sum(len(line.text) for line in lines),
            **floor,
            # Computed, not measured: which part of the workload the savings come from.
            "parts": {"article": minimums(article), "long texts": minimums(long)},
        },
        "sides": sides,
        "ratio_on_to_exact_minimum": sides["on"]["characters"] / max(1, floor["exact"]),
        "ttfb": _ttfb(p),
    }


def render_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Not measured: {result['skipped']}.\n"
    w, s, t = result["workload"], result["sides"], result["ttfb"]
    off, on = s["off"], s["on"]
    ratio = result["ratio_on_to_exact_minimum"]
    out = [
        f"{w['requests']:,} requests: the article's workload plus {w['long_texts']} six-sentence "
        f"texts (three stock sentences and three of their own; as written, one sentence changed "
        "or added, half the time by one never seen before, re-ordered); "
        f"{w['personalized']} personalized lines, whose ten patterns are the `[[templates]]`. "
        "Characters counted by the fake EmotiVoice; each side starts with an empty cache.\n",
        h.table(
            ["", "characters sent to the engine", "engine calls", "× exact-match minimum"],
            [
                [
                    "asked (no cache)",
                    w["characters"],
                    w["requests"],
                    f"{w['characters'] / w['exact']:.2f}",
                ],
                [
                    "segments off (exact caching)",
                    off["characters"],
                    off["engine_calls"],
                    f"{off['characters'] / w['exact']:.2f}",
                ],
                ["exact-match minimum (distinct keys)", w["exact"], w["distinct_keys"], "1.00"],
                [
                    "segments on (sentences + templates)",
                    on["characters"],
                    on["engine_calls"],
                    f"**{ratio:.2f}**",
                ],
                [
                    "segment-level minimum (distinct segments)",
                    w["segments"],
                    "",
                    f"{w['segments'] / w['exact']:.2f}",
                ],
            ],
        ),
        "Where the savings come from (computed from the workload, not measured): "
        + "; ".join(
            f"{name}: exact-match minimum {part['exact']:,} characters, segment-level "
            f"{part['segments']:,} ({part['segments'] / max(1, part['exact']):.2f}×)"
            for name, part in w["parts"].items()
        )
        + ".\n",
        f"Target: segments on ≤ 0.6× the exact-match minimum: "
        f"**{'met' if ratio <= 0.6 else 'missed'}** ({ratio:.2f}×). Answers with segments on by "
        "`X-Cache`: " + ", ".join(f"{k} {v:,}" for k, v in on["by_status"].items()) + "; errors "
        f"off/on: {off['errors']}/{on['errors']}.\n",
        f"Time to first byte of a six-sentence text never seen before ({t['characters']} "
        f"characters; engine calls take {t['call_s'] * 1000:.0f} ms + {t['char_s'] * 1000:.0f} ms "
        f"per character, {t['concurrency']} at once; medians of {t['rows']['whole']['rounds']}):\n",
        h.table(
            ["request", "X-Cache", "first byte (ms)", "last byte (ms)"],
            [
                [name, row["x_cache"], row["first_ms"], row["last_ms"]]
                for name, row in t["rows"].items()
            ],
        ),
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    return h.script_main(__doc__, run, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
