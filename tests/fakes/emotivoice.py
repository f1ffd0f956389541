"""A fake EmotiVoice server: the HTTP API of EmotiVoice's ``openaiapi.py``, minus the model.

Wire protocol copied from netease-youdao/EmotiVoice ``openaiapi.py``:

- ``POST /v1/audio/speech`` with JSON ``{"input": str, "voice": "8051", "prompt": "",
  "language": "zh_us", "model": "emoti-voice", "response_format": "mp3", "speed": 1.0,
  "volume": 1.0}`` (only ``input`` is required; the defaults are the real ones). A missing
  ``input`` or a wrongly typed field gives FastAPI's 422 JSON, as the real pydantic model does.
- 200 with the raw audio and ``Content-Type: audio/<response_format>`` (``audio/mp3``,
  ``audio/wav``: the format string is pasted in as it is), 16 kHz 16-bit mono.
- ``speed`` is applied after synthesis by a pitch-preserving time-stretch (duration / speed);
  ``volume`` adds ``volume - 1`` dB, as pydub's ``AudioSegment + x`` does.
- An unknown voice raises ``KeyError`` in the real server, so uvicorn answers 500 with the
  plain-text body ``Internal Server Error``; so does a format the fake cannot encode (mp3, wav,
  flac, ogg and opus work; the real one hands anything to ffmpeg).
- No streaming, no ETag, no Range, no model version.

Run standalone: ``python -m tests.fakes.emotivoice --port 8000 --latency 0.8``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from tests.fakes import (
    FakeControls,
    FakeEngine,
    FaultInjector,
    add_control_routes,
    encode_audio,
    run_standalone,
    synthesize_tone,
    time_stretch,
)

__all__ = ["DEFAULT_VOICES", "SAMPLE_RATE", "SpeechRequest", "create_app", "main"]

SAMPLE_RATE = 16_000
DEFAULT_VOICES = frozenset({"8051", "9017", "6097", "1088"})

_PLAIN_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class SpeechRequest(BaseModel):
    """EmotiVoice's request model, field for field (``Optional`` fields accept null)."""

    input: str
    voice: str = "8051"
    prompt: str | None = ""
    language: str | None = "zh_us"
    model: str | None = "emoti-voice"
    response_format: str | None = "mp3"
    speed: float | None = 1.0
    volume: float | None = 1.0


class _UnknownVoiceError(KeyError):
    """The real server's ``speaker2id[speaker]`` lookup failing."""


def synthesize(request: SpeechRequest, voices: frozenset[str], seconds_per_char: float) -> bytes:
    """Render a request the way EmotiVoice does: synthesize, stretch, adjust volume, encode."""
    if request.voice not in voices:
        raise _UnknownVoiceError(request.voice)
    audio = synthesize_tone(
        request.input,
        f"emotivoice\x00{request.voice}\x00{request.prompt or ''}",
        SAMPLE_RATE,
        seconds_per_char=seconds_per_char,
    )
    speed = 1.0 if request.speed is None else request.speed
    if speed != 1.0:
        audio = time_stretch(audio, speed)
    volume = 1.0 if request.volume is None else request.volume
    if volume != 1.0:
        gain = 10 ** ((volume - 1.0) / 20)
        audio = np.asarray(
            np.clip(np.round(audio * gain), -32768, 32767),
            dtype=np.int16,
        )
    # A null format reaches pydub's export() as None and crashes the real server too.
    return encode_audio(audio, SAMPLE_RATE, request.response_format or "")


def create_app(
    controls: FakeControls | None = None,
    *,
    voices: Iterable[str] = DEFAULT_VOICES,
    seconds_per_char: float = 0.06,
) -> FakeEngine:
    """Build the fake EmotiVoice server.

    Args:
        controls: switches and counters to use; a fresh :class:`FakeControls` by default.
        voices: the speaker ids the "model" knows; others crash with a 500.
        seconds_per_char: audio duration per input character at speed 1.0.
    """
    controls = controls if controls is not None else FakeControls()
    known = frozenset(voices)
    api = FastAPI(title="fake EmotiVoice", docs_url=None, redoc_url=None, openapi_url=None)
    add_control_routes(api, controls)

    @api.post("/v1/audio/speech")
    async def text_to_speech(speech_request: SpeechRequest) -> Response:
        # Encoding MP3/Opus takes tens of milliseconds: keep the event loop free, like the
        # real server's sync handler (FastAPI runs it in a thread pool).
        try:
            content = await run_in_threadpool(synthesize, speech_request, known, seconds_per_char)
        except (_UnknownVoiceError, ValueError):
            # The real server lets these escape and Starlette answers this bare 500 (then
            # uvicorn closes the connection); answering it here keeps test logs quiet.
            return Response(
                content=b"Internal Server Error",
                status_code=500,
                media_type="text/plain; charset=utf-8",
                headers={"connection": "close"},
            )
        controls.add_characters(len(speech_request.input))
        return Response(content=content, media_type=f"audio/{speech_request.response_format}")

    def error_body(status: int) -> tuple[bytes, str]:
        return _PLAIN_ERRORS.get(status, "Error").encode(), "text/plain; charset=utf-8"

    def garbage_content_type(body: dict[str, Any]) -> str:
        return f"audio/{body.get('response_format') or 'mp3'}"

    app = FaultInjector(
        api,
        controls,
        error_body=error_body,
        garbage_content_type=garbage_content_type,
    )
    return FakeEngine(app=app, controls=controls, name="emotivoice")


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.emotivoice [--port 8000] [--latency 0.8] [--voices 8051,...]``."""

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--voices", default=",".join(sorted(DEFAULT_VOICES)))
        parser.add_argument("--seconds-per-char", type=float, default=0.06)

    def build(args: argparse.Namespace) -> FakeEngine:
        return create_app(
            voices=[v for v in args.voices.split(",") if v],
            seconds_per_char=args.seconds_per_char,
        )

    run_standalone("Fake EmotiVoice TTS server", build, configure, argv)


if __name__ == "__main__":
    main()
