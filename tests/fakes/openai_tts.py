"""A fake OpenAI speech API (``POST /v1/audio/speech``) that validates like the real one.

Request: JSON ``{"model", "input", "voice", "instructions"?, "response_format"?,
"speed"?, "stream_format"?}`` with ``Authorization: Bearer <key>`` when the fake has a key.

- ``model`` must be one of ``models`` (tts-1, tts-1-hd, gpt-4o-mini-tts by default);
  ``input`` 1–4096 characters; ``voice`` one of ``voices``; ``response_format`` one of
  mp3 (default), opus, aac, flac, wav, pcm; ``speed`` 0.25–4.0 (default 1.0); ``instructions``
  a string (accepted with every model; the real API documents it only for gpt-4o-mini-tts);
  ``stream_format`` only ``"audio"`` (``"sse"`` streaming is not faked: 400).
- Answers stream as OpenAI's do: chunked transfer, no ``Content-Length``. The switches
  ``first_chunk_delay_s``, ``chunk_interval_s`` and ``chunk_seconds`` time the chunks (``pcm``
  is cut at sample boundaries, other formats into as many equal pieces), ``cut_next_n``
  drops the connection halfway through the next answers, and ``controls.streams`` logs when
  each answer's chunks went out.
- Any other field is rejected with 400 ``Unrecognized request argument supplied: <name>``, as
  OpenAI does; that lets gateway tests prove only documented fields go upstream (the bodies
  received are also in ``controls.requests``).
- Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 401 for a
  missing or wrong key, 400 for invalid fields, 500/503/429 from the failure switches.
- Audio is 24 kHz 16-bit mono: ``pcm`` is raw little-endian samples, the others are encoded
  with soundfile (Ogg Opus for ``opus``). ``aac`` is valid but the fake cannot encode it
  (soundfile has no AAC): it answers 400 ``"aac is unsupported in the fake"`` with code
  ``unsupported_in_fake``; use another format in tests.
- Content types: audio/mpeg, audio/opus, audio/aac, audio/flac, audio/wav, audio/pcm.

Run standalone: ``python -m tests.fakes.openai_tts --port 8001 --api-key sk-test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.fakes import (
    DROP_CONNECTION,
    FakeControls,
    FakeEngine,
    FaultInjector,
    StreamLog,
    add_control_routes,
    encode_audio,
    run_standalone,
    synthesize_tone,
    time_stretch,
)

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_MODELS",
    "DEFAULT_VOICES",
    "DOCUMENTED_FIELDS",
    "MAX_INPUT_CHARS",
    "SAMPLE_RATE",
    "create_app",
    "error_body",
    "main",
]

SAMPLE_RATE = 24_000
MAX_INPUT_CHARS = 4096
DEFAULT_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
DEFAULT_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
DOCUMENTED_FIELDS = frozenset(
    {"model", "input", "voice", "instructions", "response_format", "speed", "stream_format"}
)

_SERVER_ERRORS: dict[int, tuple[str, str, str | None]] = {
    429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error in OpenAI's JSON shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _InvalidRequestError(Exception):
    """A 400 to answer, with OpenAI's ``param`` and ``code``."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def _validate(
    body: Any, models: frozenset[str], voices: frozenset[str]
) -> tuple[str, str, str, str, float, str]:
    """Check a request body; return (model, input, voice, instructions, speed, format)."""
    if not isinstance(body, dict):
        raise _InvalidRequestError("The request body must be a JSON object.", None)
    for name in body:
        if name not in DOCUMENTED_FIELDS:
            raise _InvalidRequestError(
                f"Unrecognized request argument supplied: {name}", name, "unknown_parameter"
            )
    for name in ("model", "input", "voice"):
        if name not in body:
            raise _InvalidRequestError(
                f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
            )
    model, text, voice = body["model"], body["input"], body["voice"]
    if not isinstance(model, str) or model not in models:
        raise _InvalidRequestError(
            f"Invalid value: '{model}'. Supported values are: {sorted(models)}.",
            "model",
            "invalid_value",
        )
    if not isinstance(text, str):
        raise _InvalidRequestError("Invalid type for 'input': expected a string.", "input")
    if not text:
        raise _InvalidRequestError(
            "Invalid 'input': empty string. Expected a string with minimum length 1.",
            "input",
            "empty_string",
        )
    if len(text) > MAX_INPUT_CHARS:
        raise _InvalidRequestError(
            f"Invalid 'input': string too long. Expected a string with maximum length "
            f"{MAX_INPUT_CHARS}, but got a string with length {len(text)} instead.",
            "input",
            "string_above_max_length",
        )
    if not isinstance(voice, str) or voice not in voices:
        raise _InvalidRequestError(
            f"Invalid value: '{voice}'. Supported values are: {sorted(voices)}.",
            "voice",
            "invalid_value",
        )
    instructions = body.get("instructions", "")
    if not isinstance(instructions, str):
        raise _InvalidRequestError(
            "Invalid type for 'instructions': expected a string.", "instructions"
        )
    fmt = body.get("response_format", "mp3")
    if fmt not in CONTENT_TYPES:
        raise _InvalidRequestError(
            f"Invalid value: '{fmt}'. Supported values are: {sorted(CONTENT_TYPES)}.",
            "response_format",
            "invalid_value",
        )
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise _InvalidRequestError("Invalid type for 'speed': expected a number.", "speed")
    if not 0.25 <= speed <= 4.0:
        raise _InvalidRequestError(
            f"Invalid 'speed': expected a value between 0.25 and 4.0, but got {speed} instead.",
            "speed",
            "decimal_out_of_range",
        )
    if body.get("stream_format", "audio") != "audio":
        raise _InvalidRequestError(
            "stream_format other than 'audio' is unsupported in the fake.",
            "stream_format",
            "unsupported_in_fake",
        )
    if fmt == "aac":
        raise _InvalidRequestError(
            "aac is unsupported in the fake (soundfile cannot encode AAC).",
            "response_format",
            "unsupported_in_fake",
        )
    return model, text, voice, instructions, float(speed), fmt


def _render(model: str, text: str, voice: str, instructions: str, speed: float, fmt: str) -> bytes:
    audio = synthesize_tone(text, f"openai\x00{model}\x00{voice}\x00{instructions}", SAMPLE_RATE)
    if speed != 1.0:
        audio = time_stretch(audio, speed)
    return encode_audio(audio, SAMPLE_RATE, fmt)


def _pieces(content: bytes, fmt: str, chunk_seconds: float) -> list[bytes]:
    """The body cut into chunks of ``chunk_seconds`` of audio (equal pieces for containers)."""
    if chunk_seconds <= 0 or not content:
        return [content]
    if fmt == "pcm":
        step = max(2, round(chunk_seconds * SAMPLE_RATE) * 2)
        return [content[i : i + step] for i in range(0, len(content), step)]
    seconds = len(content) / (2 * SAMPLE_RATE)  # a rough duration is all the count needs
    count = max(1, math.ceil(seconds / chunk_seconds))
    step = math.ceil(len(content) / count)
    return [content[i : i + step] for i in range(0, len(content), step)]


async def _stream_body(
    pieces: list[bytes],
    controls: FakeControls,
    log: StreamLog,
    drop: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[bytes]:
    """The chunks, timed by the controls; with ``drop``, half of them and then a cut."""
    if controls.first_chunk_delay_s > 0:
        await asyncio.sleep(controls.first_chunk_delay_s)
    for index, piece in enumerate(pieces):
        if drop is not None and index >= max(1, len(pieces) // 2):
            log.cut = True
            await drop()
            return
        if index and controls.chunk_interval_s > 0:
            await asyncio.sleep(controls.chunk_interval_s)
        now = time.monotonic()
        log.first_chunk = log.first_chunk or now
        log.last_chunk = now
        log.chunks += 1
        yield piece
    log.completed = True


def create_app(
    controls: FakeControls | None = None,
    *,
    api_key: str | None = None,
    models: Iterable[str] = DEFAULT_MODELS,
    voices: Iterable[str] = DEFAULT_VOICES,
) -> FakeEngine:
    """Build the fake OpenAI speech API.

    Args:
        controls: switches and counters to use; a fresh :class:`FakeControls` by default.
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (else 401).
        models: accepted model names.
        voices: accepted voice names.
    """
    controls = controls if controls is not None else FakeControls()
    known_models, known_voices = frozenset(models), frozenset(voices)
    api = FastAPI(title="fake OpenAI speech", docs_url=None, redoc_url=None, openapi_url=None)
    add_control_routes(api, controls)

    @api.post("/v1/audio/speech")
    async def create_speech(request: Request) -> Response:
        if api_key is not None:
            auth = request.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return JSONResponse(
                    error_body(
                        "You didn't provide an API key. You need to provide your API key in an "
                        "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                        "YOUR_KEY)."
                    ),
                    status_code=401,
                )
            if given.strip() != api_key:
                shown = given.strip()[-4:]
                return JSONResponse(
                    error_body(
                        f"Incorrect API key provided: ***{shown}.",
                        code="invalid_api_key",
                    ),
                    status_code=401,
                )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(
                error_body(
                    "We could not parse the JSON body of your request. (HINT: This likely "
                    "means you aren't using your HTTP library correctly.)"
                ),
                status_code=400,
            )
        try:
            model, text, voice, instructions, speed, fmt = _validate(
                body, known_models, known_voices
            )
        except _InvalidRequestError as exc:
            return JSONResponse(
                error_body(str(exc), param=exc.param, code=exc.code), status_code=400
            )
        # Encoding takes tens of milliseconds (Opus more): keep the event loop responsive.
        content = await run_in_threadpool(_render, model, text, voice, instructions, speed, fmt)
        controls.add_characters(len(text))
        log = StreamLog(started=time.monotonic())
        controls.streams.append(log)
        drop = request.scope.get(DROP_CONNECTION) if controls.take("cut_next_n") else None
        pieces = _pieces(content, fmt, controls.chunk_seconds)
        return StreamingResponse(
            _stream_body(pieces, controls, log, drop), media_type=CONTENT_TYPES[fmt]
        )

    def failure(status: int) -> tuple[bytes, str]:
        message, type_, code = _SERVER_ERRORS.get(
            status, (f"Fake failure with status {status}.", "server_error", None)
        )
        return json.dumps(error_body(message, type_, None, code)).encode(), "application/json"

    def garbage_content_type(body: dict[str, Any]) -> str:
        return CONTENT_TYPES.get(str(body.get("response_format", "mp3")), "audio/mpeg")

    app = FaultInjector(
        api, controls, error_body=failure, garbage_content_type=garbage_content_type
    )
    return FakeEngine(app=app, controls=controls, name="openai")


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.openai_tts [--port 8000] [--latency 0.8] [--api-key KEY]``."""

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api-key", default=None, help="require this Bearer key")

    def build(args: argparse.Namespace) -> FakeEngine:
        return create_app(api_key=args.api_key)

    run_standalone("Fake OpenAI speech API", build, configure, argv)


if __name__ == "__main__":
    main()
