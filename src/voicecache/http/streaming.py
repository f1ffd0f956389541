"""Streamed audio responses: raw audio with chunked transfer, or OpenAI's server-sent events.

`streamed_response` turns a `SpeechStream` (`Gateway.speak_stream`) into a response whose
headers go out before the first byte: `X-Cache`, `X-Cache-Key` and `X-Cache-Tier` as on whole
responses, a `Cache-Control` from the entry's lifetime, and no `Content-Length`, `ETag` or
`Accept-Ranges` (a stream has no length yet, and a streamed WAV's header differs from the
stored file's).

- Raw audio (`"stream_format": "audio"`, `/tts` with `"stream": true`): each chunk is written
  as it arrives. If the audio breaks off before its end, the body is aborted: an exception is
  raised inside the ASGI body iteration, so the server drops the connection without the
  chunked terminator and the client sees an incomplete body, never a short one that looks
  complete.
- Server-sent events (`"stream_format": "sse"`): `data: {"type": "speech.audio.delta",
  "audio": "<base64>"}` per chunk, then `data: {"type": "speech.audio.done", "usage":
  {...}}`, as OpenAI sends them. voicecache has no tokenizer: `input_tokens` counts the
  characters of the normalized text and `output_tokens` the audio in 20 ms frames. A break
  is an event `{"type": "error", "error": {...}}` (OpenAI's error object, `errors.py`) that
  ends the stream.

The time from the request's arrival (stamped by the outermost middleware, else the handler's
start) to the first audio byte written is `voicecache_first_byte_seconds{result}`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from contextlib import aclosing
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from voicecache.errors import VoicecacheError
from voicecache.http.errors import ResponseAborted, count_error, error_body
from voicecache.http.responses import ARRIVED_SCOPE_KEY, PINNED_MAX_AGE, note_result
from voicecache.http.state import services_of
from voicecache.model import SpeechStream

StreamKind = Literal["audio", "sse"]
# OpenAI counts audio output in tokens; without a tokenizer, one per 20 ms frame.
_FRAMES_PER_SECOND = 50


def stream_cache_control(stream: SpeechStream, now: float) -> str:
    """`Cache-Control` for streamed audio: the rules of whole responses (`responses.py`)."""
    if not stream.stored:
        return "no-store"
    scope = "private" if stream.private else "public"
    if stream.expires_at is None:
        return f"{scope}, max-age={PINNED_MAX_AGE}"
    return f"{scope}, max-age={max(0, round(stream.expires_at - now))}"


def stream_headers(stream: SpeechStream, kind: StreamKind, now: float) -> list[tuple[bytes, bytes]]:
    """Raw ASGI headers of a streamed response (no content-length: chunked transfer)."""
    if kind == "sse":
        content_type, cache_control = "text/event-stream", "no-store"
    else:
        content_type, cache_control = stream.content_type, stream_cache_control(stream, now)
    headers = [
        (b"content-type", content_type.encode()),
        (b"cache-control", cache_control.encode()),
        (b"x-cache", stream.status.encode()),
        (b"x-cache-key", stream.key.encode()),
        # Proxies such as nginx buffer responses unless told not to.
        (b"x-accel-buffering", b"no"),
    ]
    if stream.tier is not None:
        headers.append((b"x-cache-tier", stream.tier.encode()))
    if stream.segments is not None:
        headers.append((b"x-cache-segments", "{}/{}".format(*stream.segments).encode()))
    return headers


def sse_event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(stream: SpeechStream) -> dict[str, int]:
    """The `usage` of the final SSE event (see the module docstring)."""
    seconds = stream.result.meta.duration if stream.result is not None else 0.0
    output = math.ceil(seconds * _FRAMES_PER_SECOND)
    return {
        "input_tokens": stream.characters,
        "output_tokens": output,
        "total_tokens": stream.characters + output,
    }


class StreamedAudio(Response):
    """A `SpeechStream` as an HTTP response (raw ASGI: no buffering, no Content-Length)."""

    def __init__(self, stream: SpeechStream, kind: StreamKind, now: float, arrived: float):
        super().__init__(status_code=200)
        self.stream = stream
        self.kind = kind
        self.now = now
        self.arrived = arrived

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.stream
        metrics = services_of(scope).metrics
        headers = stream_headers(stream, self.kind, self.now)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        first = True
        try:
            async with aclosing(stream.chunks) as chunks:
                async for data in chunks:
                    if self.kind == "sse":
                        data = sse_event(
                            {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
                        )
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    if first:
                        first = False
                        metrics.first_byte(stream.status, time.perf_counter() - self.arrived)
        except Exception as exc:
            name = type(exc).__name__
            count_error(scope, name)
            if self.kind != "sse":
                raise ResponseAborted(f"the stream of {stream.key} broke off") from exc
            detail = exc.detail if isinstance(exc, VoicecacheError) else "internal error"
            _, error = error_body(scope["path"], 502, detail, name)
            event = sse_event({"type": "error", **error})
            await send({"type": "http.response.body", "body": event, "more_body": False})
            return
        if stream.result is not None:
            note_result(scope, stream.result)
        tail = b""
        if self.kind == "sse":
            tail = sse_event({"type": "speech.audio.done", "usage": usage(stream)})
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def arrival(request: Request) -> float:
    """When `request` arrived (`time.perf_counter()`): the outermost middleware's stamp, or
    now. Read it first thing in a handler."""
    arrived = request.scope.get(ARRIVED_SCOPE_KEY)
    return arrived if isinstance(arrived, float) else time.perf_counter()


def streamed_response(
    request: Request, stream: SpeechStream, kind: StreamKind, arrived: float
) -> StreamedAudio:
    """The response streaming `stream` to the client that sent `request` (which arrived at
    `arrived`, from `arrival`)."""
    return StreamedAudio(stream, kind, services_of(request.scope).gateway.clock(), arrived)
