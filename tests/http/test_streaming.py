"""Streamed responses over real HTTP: OpenAI's `stream_format` (`audio`, `sse`) and `/tts`
`"stream": true`, against the streaming fake OpenAI server and the embedded eSpeak engine.

What must hold: identical streams share one engine call and followers get bytes before the
engine finishes; a stream cut short upstream is never stored and reaches clients as a broken
stream; a client leaving does not cancel the fill; hits stream from stored audio."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import soundfile as sf
from openai import OpenAI

from tests.cache.test_policy import Clock
from tests.conftest import LiveApp
from tests.fixtures_servers import FAKE_OPENAI_KEY, FakeEngineServer
from voicecache.bootstrap import build
from voicecache.settings import Settings

# 40 characters: 2.4 s of fake audio in ten chunks of 0.25 s.
LINE = "A line that the fake renders in chunks.!"
SPEECH = "/v1/audio/speech"
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog, then it runs away."] * 50)


def openai_settings(settings: Settings, fake: FakeEngineServer, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "engine": "openai",
            "openai_base_url": fake.url,
            "openai_api_key": FAKE_OPENAI_KEY,
            "engine_retries": 1,
            **extra,
        }
    )


def speech(text: str = LINE, fmt: str = "pcm", stream: str | None = "audio") -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tts-1", "input": text, "voice": "alloy"}
    body["response_format"] = fmt
    if stream is not None:
        body["stream_format"] = stream
    return body


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class Streamed:
    """One streamed response as a client saw it."""

    def __init__(self, response: httpx.Response, chunks: list[tuple[float, bytes]]) -> None:
        self.headers = response.headers
        self.chunks = chunks
        self.first = chunks[0][0] if chunks else None

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)


def stream(live: LiveApp, path: str, body: dict[str, Any]) -> Streamed:
    with live.client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        chunks = [(time.monotonic(), data) for data in response.iter_raw()]
    return Streamed(response, chunks)


async def stream_async(client: httpx.AsyncClient, body: dict[str, Any]) -> Streamed:
    async with client.stream("POST", SPEECH, json=body) as response:
        assert response.status_code == 200
        chunks = [(time.monotonic(), data) async for data in response.aiter_raw()]
    return Streamed(response, chunks)


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def assert_streamed(headers: httpx.Headers) -> None:
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers


# -- the API ---------------------------------------------------------------------------------


def test_the_official_openai_client_reads_the_sse_stream(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    client = OpenAI(base_url=f"{live.url}/v1", api_key="unused")
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input="Server-sent events, read by the official client.",
        response_format="pcm",
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-cache"] == "MISS" and len(response.headers["x-cache-key"]) == 64
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data")]
    *deltas, done = events
    assert deltas and all(event["type"] == "speech.audio.delta" for event in deltas)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == len("Server-sent events, read by the official client.")
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    whole = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="Server-sent events, read by the official client.",
        response_format="pcm",
    )
    assert whole.response.headers["x-cache"] == "HIT"
    assert whole.content == audio  # streamed PCM is exactly the stored PCM
    assert usage["output_tokens"] == pytest.approx(len(audio) / 2 / 24000 * 50, abs=1)


def test_without_stream_format_the_answer_is_the_whole_file_as_before(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    response = live.client.post(SPEECH, json=speech("Whole, as always.", "wav", None))
    assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content[4:8] != b"\xff\xff\xff\xff" and "etag" in response.headers


@pytest.mark.parametrize(
    ("path", "body"),
    [(SPEECH, speech(stream="video")), ("/tts", {"text": "hi", "voice": "en", "stream": "maybe"})],
)
def test_a_bad_stream_field_is_a_4xx_with_a_detail(
    live: LiveApp, path: str, body: dict[str, Any]
) -> None:
    response = live.client.post(path, json=body)
    assert 400 <= response.status_code < 500
    answer = response.json()
    message = answer["error"]["message"] if path == SPEECH else answer["detail"]
    assert "stream" in message


# -- sharing one engine call -------------------------------------------------------------------


async def test_five_concurrent_streams_share_one_engine_call_and_follow_it_live(
    serve: Callable[..., LiveApp], settings: Settings, fake_openai: FakeEngineServer
) -> None:
    fake_openai.controls.update(first_chunk_delay_s=0.1, chunk_interval_s=0.15)
    live = serve(openai_settings(settings, fake_openai))
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        leader = asyncio.ensure_future(stream_async(client, speech()))
        streams = fake_openai.controls.streams  # filled by the fake's server thread
        await asyncio.to_thread(wait_for, lambda: bool(streams and streams[0].first_chunk))
        # Four more join once the engine has begun: they replay, then follow live. A whole
        # request joins too: it shares the same engine call and waits for the end.
        followers = [asyncio.ensure_future(stream_async(client, speech())) for _ in range(4)]
        whole = asyncio.ensure_future(client.post(SPEECH, json=speech(stream=None)))
        streams = [await leader, *[await follower for follower in followers]]
        complete = await whole
    (log,) = fake_openai.controls.streams
    assert fake_openai.controls.calls == 1 and log.completed and log.last_chunk is not None
    assert sorted(s.headers["x-cache"] for s in streams) == ["COALESCED"] * 4 + ["MISS"]
    assert streams[0].headers["x-cache"] == "MISS"
    for streamed in streams:
        assert_streamed(streamed.headers)
        assert streamed.body == streams[0].body
        assert streamed.first is not None and streamed.first < log.last_chunk
    assert len(streams[0].chunks) > 1
    assert complete.headers["x-cache"] == "COALESCED" and complete.content == streams[0].body
    hit = live.client.post(SPEECH, json=speech())
    assert hit.headers["x-cache"] == "HIT" and hit.content == streams[0].body


# -- failure -----------------------------------------------------------------------------------


def test_a_stream_cut_upstream_is_broken_for_the_client_and_never_stored(
    serve: Callable[..., LiveApp], settings: Settings, fake_openai: FakeEngineServer
) -> None:
    fake_openai.controls.update(cut_next_n=1, chunk_interval_s=0.05)
    live = serve(openai_settings(settings, fake_openai))
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        live.client.stream("POST", SPEECH, json=speech()) as response,
    ):
        assert response.headers["x-cache"] == "MISS"
        for data in response.iter_raw():
            received.extend(data)
    assert received  # half of the audio arrived before the break
    assert fake_openai.controls.calls == 1 and fake_openai.controls.streams[0].cut
    again = stream(live, SPEECH, speech())
    assert again.headers["x-cache"] == "MISS" and fake_openai.controls.calls == 2
    assert len(again.body) > len(received)
    assert live.client.post(SPEECH, json=speech()).headers["x-cache"] == "HIT"


def test_a_stream_cut_upstream_ends_an_sse_stream_with_an_error_event(
    serve: Callable[..., LiveApp], settings: Settings, fake_openai: FakeEngineServer
) -> None:
    fake_openai.controls.update(cut_next_n=1, chunk_interval_s=0.05)
    live = serve(openai_settings(settings, fake_openai))
    response = live.client.post(SPEECH, json=speech(stream="sse"))
    events = sse_events(response.text)
    assert events[0]["type"] == "speech.audio.delta" and events[-1]["type"] == "error"
    assert "broke off" in events[-1]["error"]["message"]
    assert events[-1]["error"]["type"] == "server_error"
    assert not any(event["type"] == "speech.audio.done" for event in events)
    assert live.client.post(SPEECH, json=speech(stream=None)).headers["x-cache"] == "MISS"


def test_a_client_leaving_mid_stream_does_not_cancel_the_fill(
    serve: Callable[..., LiveApp], settings: Settings, fake_openai: FakeEngineServer
) -> None:
    fake_openai.controls.update(chunk_interval_s=0.1)
    live = serve(openai_settings(settings, fake_openai))
    with live.client.stream("POST", SPEECH, json=speech()) as response:
        first = next(response.iter_raw())
        assert first and response.headers["x-cache"] == "MISS"
    # The client has hung up after its first chunk; the render goes on and is stored.
    key = response.headers["x-cache-key"]
    memory = live.gateway.cache.memory
    assert memory is not None
    wait_for(lambda: memory.header(f"{key}.pcm") is not None)
    assert fake_openai.controls.streams[0].completed
    hit = live.client.post(SPEECH, json=speech(stream=None))
    assert hit.headers["x-cache"] == "HIT" and hit.content.startswith(first)
    assert fake_openai.controls.calls == 1


def test_stale_if_error_applies_to_streams(
    serve: Callable[..., LiveApp], settings: Settings, fake_openai: FakeEngineServer
) -> None:
    clock = Clock()
    configured = openai_settings(settings, fake_openai, default_ttl=60.0, grace=600.0)
    live = serve(configured, services=build(configured, clock=clock))
    fresh = live.client.post(SPEECH, json=speech(stream=None))
    assert fresh.headers["x-cache"] == "MISS"
    clock.advance(61)  # expired, within grace
    fake_openai.controls.update(fail_next_n=1000, status_code=503)
    stale = stream(live, SPEECH, speech())
    assert stale.headers["x-cache"] == "STALE" and stale.body == fresh.content
    assert_streamed(stale.headers)


# -- hits --------------------------------------------------------------------------------------


def test_hits_asked_as_streams_are_streamed_from_memory_and_disk(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    body = {"text": "Hits stream too.", "voice": "en", "format": "wav"}
    whole = live.client.post("/tts", json=body)
    assert whole.headers["x-cache"] == "MISS"
    from_memory = stream(live, "/tts", body | {"stream": True})
    assert from_memory.headers["x-cache"] == "HIT"
    assert from_memory.headers["x-cache-tier"] == "memory"
    assert_streamed(from_memory.headers)
    assert from_memory.body == whole.content  # the stored file, complete header included
    sse = live.client.post(SPEECH, json=speech("Hits stream too.", "wav", "sse") | {"voice": "en"})
    assert sse.headers["x-cache"] == "HIT"
    deltas = [e for e in sse_events(sse.text) if e["type"] == "speech.audio.delta"]
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == whole.content
    live.restart()  # a new process: memory is empty, the disk tier remains
    from_disk = stream(live, "/tts", body | {"stream": True})
    assert from_disk.headers["x-cache"] == "HIT" and from_disk.headers["x-cache-tier"] == "disk"
    assert_streamed(from_disk.headers)
    assert from_disk.body == whole.content
    assert live.engine_calls() == 0  # the restarted process never called its engine


def test_tts_stream_with_espeak_sends_audio_before_the_render_is_done(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    body = {"text": LONG_TEXT, "voice": "en", "stream": True}
    streamed = stream(live, "/tts", body)
    assert streamed.headers["x-cache"] == "MISS" and streamed.headers["content-type"] == "audio/wav"
    assert_streamed(streamed.headers)
    assert len(streamed.chunks) > 1
    metrics = live.services.metrics
    first_byte = metrics.first_byte_seconds["miss"].total
    engine = metrics.engine_seconds["espeak"].total
    assert first_byte < engine / 2  # the first audio left long before eSpeak finished
    # A streamed WAV: unknown sizes in the header; the stored file is complete.
    data = streamed.body
    assert data[:4] == b"RIFF" and data[4:8] == data[40:44] == b"\xff\xff\xff\xff"
    stored = live.client.post("/tts", json=body | {"stream": False})
    assert stored.headers["x-cache"] == "HIT"
    assert struct.unpack_from("<I", stored.content, 40)[0] == len(data) - 44
    assert stored.content[44:] == data[44:]
    frames = (len(data) - 44) // 2
    assert sf.info(io.BytesIO(stored.content)).frames == frames
    canonical = live.client.get(f"/v1/audio/{streamed.headers['x-cache-key']}.flac")
    assert canonical.status_code == 200 and sf.info(io.BytesIO(canonical.content)).frames == frames
    exposition = live.client.get("/metrics").text
    assert 'voicecache_first_byte_seconds_count{result="miss"} 1.0' in exposition


async def test_a_stream_joining_a_whole_request_waits_for_its_audio(
    serve: Callable[..., LiveApp], settings: Settings, fake_openai: FakeEngineServer
) -> None:
    fake_openai.controls.update(chunk_interval_s=0.05)
    live = serve(openai_settings(settings, fake_openai))
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        whole = asyncio.ensure_future(client.post(SPEECH, json=speech(stream=None)))
        await asyncio.to_thread(wait_for, lambda: fake_openai.controls.calls == 1)
        streamed = await stream_async(client, speech())
        complete = await whole
    assert complete.headers["x-cache"] == "MISS" and streamed.headers["x-cache"] == "COALESCED"
    assert streamed.body == complete.content and fake_openai.controls.calls == 1
    assert_streamed(streamed.headers)
