"""Scenario 5, storage density and codec cost: bytes per second of audio and encode/decode
milliseconds per second of audio for each storage codec, on real speech.

The speech comes from the embedded eSpeak NG engine (22,050 Hz mono), English and Chinese
game and stream lines; encoding and decoding go through ``voicecache.codecs`` exactly as the
gateway stores and transcodes entries. Times are the median of several repeats.

Usage: ``python -m benchmarks.density [--quick] [--out FILE.json]``
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import _harness as h
from benchmarks.workload import FIXED_EN, FIXED_ZH
from voicecache import codecs
from voicecache.engines.espeak import EspeakEngine
from voicecache.model import SynthesisJob

CODECS: tuple[codecs.AudioFormat, ...] = ("wav", "flac", "opus", "mp3")
GB = 1_000_000_000


def speech(count: int) -> list[codecs.Audio]:
    """``count`` lines of real speech, alternating English and Chinese."""
    engine = EspeakEngine(name="espeak", model_version="bench")
    texts = [t for pair in zip(FIXED_EN, FIXED_ZH, strict=True) for t in pair][:count]

    async def synthesize() -> list[codecs.Audio]:
        return [
            await engine.synthesize(
                SynthesisJob(
                    text=text,
                    voice="cmn" if not text.isascii() else "en",
                    emotion="neutral",
                    speed=1.0,
                )
            )
            for text in texts
        ]

    return asyncio.run(synthesize())


def _timed(work: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def run(quick: bool = False) -> dict[str, Any]:
    lines = speech(4 if quick else 12)
    repeats = 1 if quick else 3
    seconds = sum(a.duration for a in lines)
    h.log(f"density: {len(lines)} lines, {seconds:.1f} s of speech, codecs {', '.join(CODECS)}")
    rows = []
    for fmt in CODECS:
        size = encode_s = decode_s = 0.0
        for pcm in lines:
            started = time.perf_counter()
            data = codecs.encode(pcm, fmt)
            first = time.perf_counter() - started
            size += len(data)
            more = [
                _timed(lambda pcm=pcm, fmt=fmt: codecs.encode(pcm, fmt), 1)
                for _ in range(repeats - 1)
            ]
            encode_s += float(np.median([first, *more]))
            decode_s += _timed(lambda data=data, fmt=fmt: codecs.decode(data, fmt), repeats)
        per_second = size / seconds
        rows.append(
            {
                "codec": fmt,
                "bytes_per_audio_second": per_second,
                "encode_ms_per_audio_second": 1000 * encode_s / seconds,
                "decode_ms_per_audio_second": 1000 * decode_s / seconds,
                "hours_per_gb": GB / per_second / 3600,
                "entries_per_gb": GB / (size / len(lines)),
            }
        )
    wav = rows[0]["bytes_per_audio_second"]
    for row in rows:
        row["x_smaller_than_wav"] = wav / row["bytes_per_audio_second"]
    return {
        "lines": len(lines),
        "audio_seconds": seconds,
        "mean_line_seconds": seconds / len(lines),
        "sample_rate": lines[0].sample_rate,
        "repeats": repeats,
        "rows": rows,
    }


def render_markdown(result: dict[str, Any]) -> str:
    out = [
        f"{result['lines']} lines of eSpeak NG speech (English and Chinese, "
        f"{result['sample_rate']:,} Hz mono), {result['audio_seconds']:.1f} s in all, "
        f"{result['mean_line_seconds']:.2f} s per line on average; times are medians of "
        f"{result['repeats']} repeat(s). Entries per GB assume lines of that average length.\n",
        h.table(
            [
                "codec",
                "bytes / audio-s",
                "× smaller than WAV",
                "encode ms / audio-s",
                "decode ms / audio-s",
                "hours / GB",
                "entries / GB",
            ],
            [
                [
                    r["codec"].upper() if r["codec"] != "opus" else "Opus (Ogg)",
                    round(r["bytes_per_audio_second"]),
                    f"{r['x_smaller_than_wav']:.1f}",
                    f"{r['encode_ms_per_audio_second']:.2f}",
                    f"{r['decode_ms_per_audio_second']:.2f}",
                    r["hours_per_gb"],
                    round(r["entries_per_gb"]),
                ]
                for r in result["rows"]
            ],
        ),
        "voicecache stores each line once in the canonical codec (`VOICECACHE_STORAGE_CODEC`, "
        "FLAC by default) plus one entry per other format clients asked for, so a line asked for "
        "as MP3 costs FLAC + MP3 bytes.\n",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    return h.script_main(__doc__, run, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
