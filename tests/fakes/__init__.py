"""Fake upstream TTS engines that speak the real wire protocols, plus the switches tests flip.

Each fake (``tests.fakes.emotivoice``, ``tests.fakes.openai_tts``) is a FastAPI app factory
returning a :class:`FakeEngine`: the ASGI app, wrapped in :class:`FaultInjector`, and the
:class:`FakeControls` that steer it. Tests flip switches on ``engine.controls`` directly (the
server runs in a uvicorn thread of the same process); another process (a benchmark) uses the
control routes every fake serves:

- ``GET /_fake/stats`` → ``{"calls": N, "characters": M}``
- ``GET /_fake/requests`` → the JSON bodies received, oldest first
- ``POST /_fake/reset`` → switches and counters back to their defaults
- ``POST /_fake/controls`` with a JSON object of switches → the switches now in force

Audio is a deterministic tone: its pitch depends on the request's text and voice fields,
its duration is proportional to the text (``seconds_per_char``), and ``speed`` is applied
after synthesis by a pitch-preserving time-stretch, as EmotiVoice does with rubberband.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
from fastapi import FastAPI, HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tests.servers import UvicornThread

__all__ = [
    "DROP_CONNECTION",
    "SPEECH_PATH",
    "FakeControls",
    "FakeEngine",
    "FaultInjector",
    "StreamLog",
    "add_control_routes",
    "encode_audio",
    "run_standalone",
    "synthesize_tone",
    "time_stretch",
]

SPEECH_PATH = "/v1/audio/speech"
# Scope key of an async callable that drops the client's connection (see `FaultInjector`).
DROP_CONNECTION = "fake.drop_connection"

# Bytes that decode as no audio format at all (not RIFF, fLaC, OggS, ID3 or an MPEG sync).
GARBAGE = b"<html><body>502 Bad Gateway (fake garbage, not audio)</body></html>\n" * 4

# The switches another process may set through POST /_fake/controls.
SWITCHES = (
    "latency_s",
    "latency_per_char_s",
    "fail_next_n",
    "status_code",
    "reset_connection_next_n",
    "garbage_next_n",
    "hang",
    "first_chunk_delay_s",
    "chunk_interval_s",
    "chunk_seconds",
    "cut_next_n",
)


@dataclass
class FakeControls:
    """Run-time switches and counters of a fake engine, shared between threads.

    Switches (set them as attributes or with :meth:`update`):
        latency_s: seconds to sleep (asynchronously) before answering any speech request.
        latency_per_char_s: more seconds per character of the request's ``input`` (a real
            engine's time grows with the audio it makes).
        fail_next_n: answer the next N speech requests with ``status_code``.
        status_code: the failure status, 500 by default (503 for "overloaded").
        reset_connection_next_n: close the TCP connection of the next N requests without
            sending a byte (clients see ``httpx.RemoteProtocolError``).
        garbage_next_n: answer the next N requests 200 with non-audio bytes under an audio
            content type.
        hang: while True, speech requests wait without answering; set it back to False to
            release them (a waiting request also ends when its client disconnects).
        first_chunk_delay_s, chunk_interval_s, chunk_seconds: streamed answers (the fakes that
            stream, ``tests.fakes.openai_tts``): the first chunk of the body is sent this long
            after the request, the next ones this long apart, each holding ``chunk_seconds``
            of audio (``0``: the whole body in one chunk).
        cut_next_n: the next N streamed answers send half their chunks, then drop the
            connection (clients see an incomplete chunked body).

    Counters (read them from any thread):
        calls: speech requests received, including failed ones.
        characters: ``len(input)`` summed over requests that were actually synthesized.
        requests: JSON bodies received, oldest first (non-JSON bodies are kept as
            ``{"_raw": "<text>"}``).
        streams: one :class:`StreamLog` per streamed answer, oldest first (``time.monotonic``
            timestamps, comparable with the tests' own in this process).
    """

    latency_s: float = 0.0
    latency_per_char_s: float = 0.0
    fail_next_n: int = 0
    status_code: int = 500
    reset_connection_next_n: int = 0
    garbage_next_n: int = 0
    hang: bool = False
    first_chunk_delay_s: float = 0.0
    chunk_interval_s: float = 0.0
    chunk_seconds: float = 0.25
    cut_next_n: int = 0
    calls: int = 0
    characters: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    streams: list[StreamLog] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        """Restore every switch and counter to its default."""
        with self._lock:
            for f in fields(self):
                if f.name == "_lock":
                    continue
                if f.name in ("requests", "streams"):
                    setattr(self, f.name, [])
                else:
                    setattr(self, f.name, f.default)

    def update(self, **switches: Any) -> None:
        """Set several switches at once; unknown names raise ``ValueError``.

        Values are coerced to each switch's type, so JSON from another process works.
        """
        unknown = set(switches) - set(SWITCHES)
        if unknown:
            raise ValueError(f"unknown switches {sorted(unknown)}; known: {list(SWITCHES)}")
        with self._lock:
            for name, value in switches.items():
                kind = type(getattr(self, name))
                setattr(self, name, kind(value))

    def switches(self) -> dict[str, Any]:
        """The switches now in force, as a JSON-ready dict."""
        with self._lock:
            return {name: getattr(self, name) for name in SWITCHES}

    def stats(self) -> dict[str, int]:
        """``{"calls": N, "characters": M}``."""
        with self._lock:
            return {"calls": self.calls, "characters": self.characters}

    def record(self, body: dict[str, Any]) -> None:
        """Count one speech request and keep its body."""
        with self._lock:
            self.calls += 1
            self.requests.append(body)

    def add_characters(self, n: int) -> None:
        """Count characters that were synthesized."""
        with self._lock:
            self.characters += n

    def take(self, counter: str) -> bool:
        """Consume one unit of a ``*_next_n`` switch; True if this request should get it."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
                return True
            return False


@dataclass
class StreamLog:
    """What one streamed answer did, for tests that assert orderings (monotonic seconds)."""

    started: float
    chunks: int = 0
    first_chunk: float | None = None
    last_chunk: float | None = None
    completed: bool = False
    cut: bool = False


# An error answer: status, body bytes, content type.
ErrorBody = Callable[[int], tuple[bytes, str]]
# The content type a garbage answer claims, given the request's JSON body.
GarbageType = Callable[[dict[str, Any]], str]


class FaultInjector:
    """ASGI wrapper that applies :class:`FakeControls` to ``POST /v1/audio/speech``.

    It is the outermost layer on purpose: to drop a connection without answering it needs
    uvicorn's own ``receive`` (bound to the request cycle that owns the transport); any
    Starlette layer in between would hide it. It reads the request body once, records it,
    and replays it to the wrapped app.
    """

    def __init__(
        self,
        app: ASGIApp,
        controls: FakeControls,
        *,
        error_body: ErrorBody,
        garbage_content_type: GarbageType,
    ) -> None:
        self.app = app
        self.controls = controls
        self.error_body = error_body
        self.garbage_content_type = garbage_content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SPEECH_PATH:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = None
        recorded = parsed if isinstance(parsed, dict) else {"_raw": body.decode(errors="replace")}
        controls = self.controls
        controls.record(recorded)

        text = recorded.get("input")
        latency = controls.latency_s + controls.latency_per_char_s * len(
            text if isinstance(text, str) else ""
        )
        if latency > 0:
            await asyncio.sleep(latency)
        if controls.hang and not await _hang(controls, receive):
            return  # the client gave up; there is nobody to answer
        if controls.take("reset_connection_next_n"):
            await _drop_connection(receive)
            return
        if controls.take("fail_next_n"):
            content, content_type = self.error_body(controls.status_code)
            await _respond(send, controls.status_code, content, content_type)
            return
        if controls.take("garbage_next_n"):
            await _respond(send, 200, GARBAGE, self.garbage_content_type(recorded))
            return

        # A streaming app cuts its answer short through this (it needs uvicorn's own receive).
        scope = {**scope, DROP_CONNECTION: lambda: _drop_connection(receive)}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _hang(controls: FakeControls, receive: Receive) -> bool:
    """Wait while ``controls.hang`` is set; False if the client disconnected meanwhile.

    After the body is read, uvicorn's ``receive()`` only returns on disconnect, so racing it
    lets a hung request end with its client (and keeps server shutdown from waiting on it).
    """
    disconnect = asyncio.ensure_future(receive())
    try:
        while controls.hang:
            done, _ = await asyncio.wait({disconnect}, timeout=0.02)
            if done:
                return False
        return True
    finally:
        if not disconnect.done():
            disconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await disconnect


async def _drop_connection(receive: Receive) -> None:
    """Close the client's TCP connection without sending any response bytes.

    uvicorn's ``receive`` is a bound method of its per-request cycle object, which holds the
    asyncio transport; ``abort()`` closes the socket at once. uvicorn then notices the
    disconnect and sends nothing (no 500 page), which is what a crashed upstream looks like.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("reset_connection needs uvicorn's receive() as the outer ASGI layer")
    transport.abort()
    # Let connection_lost() run so uvicorn marks the cycle disconnected before we return.
    for _ in range(3):
        await asyncio.sleep(0)


async def _respond(send: Send, status: int, content: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(content)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content, "more_body": False})


@dataclass
class FakeEngine:
    """A fake engine: the ASGI app to serve and the controls that steer it."""

    app: ASGIApp
    controls: FakeControls
    name: str

    def serve(self, **kwargs: Any) -> UvicornThread:
        """A not-yet-started :class:`tests.servers.UvicornThread` serving this fake."""
        from tests.servers import UvicornThread  # tests.servers is heavier; import on use

        return UvicornThread(self.app, **kwargs)


def add_control_routes(app: FastAPI, controls: FakeControls) -> None:
    """Add the ``/_fake/*`` routes that let another process read and steer the fake."""

    @app.get("/_fake/stats")
    async def stats() -> dict[str, int]:
        return controls.stats()

    @app.get("/_fake/requests")
    async def requests() -> list[dict[str, Any]]:
        return list(controls.requests)

    @app.post("/_fake/reset")
    async def reset() -> dict[str, Any]:
        controls.reset()
        return controls.switches()

    @app.post("/_fake/controls")
    async def set_controls(request: Request) -> dict[str, Any]:
        try:
            switches = await request.json()
            if not isinstance(switches, dict):
                raise ValueError("expected a JSON object")
            controls.update(**switches)
        except (ValueError, TypeError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return controls.switches()


# -- audio ---------------------------------------------------------------------------------


def synthesize_tone(
    text: str,
    key: str,
    sample_rate: int,
    *,
    seconds_per_char: float = 0.06,
) -> npt.NDArray[np.int16]:
    """A deterministic "utterance": one syllable-shaped beep per character of ``text``.

    The pitch (150–549 Hz) is derived from ``key`` and ``text`` so different voices, prompts
    or texts give audibly and numerically different audio; the length is
    ``max(1, len(text)) * seconds_per_char`` seconds.
    """
    digest = hashlib.sha256(f"{key}\x00{text}".encode()).digest()
    frequency = 150 + int.from_bytes(digest[:2], "big") % 400
    per_char = max(1, round(seconds_per_char * sample_rate))
    n = max(1, len(text)) * per_char
    t = np.arange(n, dtype=np.float64) / sample_rate
    # A raised-sine envelope per character: starts and ends at 0, so no clicks, and gives
    # the signal a speech-like rhythm that makes truncation visible.
    envelope = np.sin(np.pi * (np.arange(n) % per_char) / per_char) ** 2
    wave = 0.4 * envelope * np.sin(2 * np.pi * frequency * t)
    return np.asarray(np.round(wave * 32767), dtype=np.int16)


def time_stretch(audio: npt.NDArray[np.int16], speed: float) -> npt.NDArray[np.int16]:
    """Change the duration by ``1/speed`` keeping the pitch (WSOLA overlap-add).

    Plain resampling would shift the pitch; real engines (EmotiVoice uses rubberband) keep
    it. Frames are read ``speed`` times faster than they are written, each nudged by up to
    ``tolerance`` samples to the offset that best continues the previous frame's waveform, so
    overlapping frames add in phase and a tone keeps its frequency.
    """
    if speed == 1.0 or audio.size == 0:
        return audio
    n_out = max(1, round(audio.size / speed))
    frame, hop_out, tolerance = 512, 256, 128
    overlap = frame - hop_out
    hop_in = hop_out * speed
    window = np.hanning(frame)
    source = np.concatenate([audio.astype(np.float64), np.zeros(2 * frame + tolerance)])
    last_start = audio.size + frame  # any later start reads only padding
    n_frames = math.ceil(n_out / hop_out) + 1
    out = np.zeros(n_frames * hop_out + frame)
    weight = np.zeros_like(out)
    previous = 0
    for k in range(n_frames):
        nominal = min(round(k * hop_in), last_start)
        start = nominal
        if k > 0:
            natural = previous + hop_out  # where the previous frame's waveform continues
            template = source[natural : natural + overlap]
            low = max(0, nominal - tolerance)
            high = min(last_start, nominal + tolerance)
            if np.any(template) and high > low:
                scores = np.correlate(source[low : high + overlap], template, mode="valid")
                start = low + int(np.argmax(scores))
        out[k * hop_out : k * hop_out + frame] += source[start : start + frame] * window
        weight[k * hop_out : k * hop_out + frame] += window
        previous = start
    stretched = np.divide(out, weight, out=np.zeros_like(out), where=weight > 1e-6)[:n_out]
    return np.asarray(np.clip(np.round(stretched), -32768, 32767), dtype=np.int16)


# soundfile (libsndfile 1.2) format and subtype for each container the fakes produce.
_SOUNDFILE_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}


def encode_audio(audio: npt.NDArray[np.int16], sample_rate: int, fmt: str) -> bytes:
    """Encode int16 mono samples; ``pcm`` is raw 16-bit little-endian.

    Raises:
        ValueError: ``fmt`` is not one of pcm, wav, flac, mp3, ogg, opus.
    """
    if fmt == "pcm":
        return audio.astype("<i2").tobytes()
    try:
        container, subtype = _SOUNDFILE_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"the fake cannot encode {fmt!r}") from None
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


# -- standalone ----------------------------------------------------------------------------


def run_standalone(
    description: str,
    build: Callable[[argparse.Namespace], FakeEngine],
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> None:
    """Command-line entry point shared by the fakes (``python -m tests.fakes.<name>``)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--log-level", default="warning")
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    engine = build(args)
    engine.controls.latency_s = args.latency
    uvicorn.run(engine.app, host=args.host, port=args.port, log_level=args.log_level)
