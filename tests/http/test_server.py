"""Tests of the test infrastructure: real servers (tests.servers) and fake engines (tests.fakes).

They check what the rest of the suite relies on: that the servers really start, die and come
back on the same port, and that the fakes speak the real wire formats and obey every switch.
Server fixtures come from ``tests/fixtures_servers.py`` through ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio
import soundfile as sf
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from tests.fakes import FakeControls, emotivoice, openai_tts
from tests.fixtures_servers import FAKE_OPENAI_KEY, FakeEngineServer
from tests.servers import (
    MotoS3Server,
    RedisCluster,
    RedisServer,
    UvicornThread,
    free_port,
    wait_for_port,
)

SPEECH = "/v1/audio/speech"
REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAI_AUTH = {"Authorization": f"Bearer {FAKE_OPENAI_KEY}"}


def decode(content: bytes) -> tuple[np.ndarray[Any, Any], int, sf._SoundFileInfo]:
    """Decode audio bytes with soundfile: (samples as float64, sample rate, info)."""
    info = sf.info(io.BytesIO(content))
    data, rate = sf.read(io.BytesIO(content), dtype="float64")
    return data, rate, info


def dominant_frequency(samples: np.ndarray[Any, Any], rate: int) -> float:
    """The strongest frequency in ``samples`` (Hz)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


# -- Redis -----------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_set_get_through_asyncio_client(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.set("voice:1", b"\x00audio\xff")
        assert await client.get("voice:1") == b"\x00audio\xff"
        info = await client.info("persistence")
        assert info["aof_enabled"] == 0  # persistence is off, as configured
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_kill_gives_connection_error_then_start_restores_same_port() -> None:
    with RedisServer(maxmemory="2mb", policy="allkeys-lru") as server:
        port, url = server.port, server.url
        client = redis.asyncio.Redis.from_url(url, socket_timeout=2)
        try:
            assert await client.config_get("maxmemory-policy") == {
                "maxmemory-policy": "allkeys-lru"
            }
            await client.set("k", "before")
            server.kill()
            assert not server.is_running
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.get("k")
            server.start()
            assert server.port == port and server.url == url
            # Data was not persisted; the same client reconnects by itself.
            assert await client.get("k") is None
            await client.set("k", "after")
            assert await client.get("k") == b"after"
        finally:
            await client.aclose()
        directory = server.directory
    assert not directory.exists()
    assert not server.is_running


@pytest.mark.redis
def test_redis_stop_and_start_keeps_port_and_close_leaves_nothing() -> None:
    server = RedisServer().start()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert server.pid is None
    server.start()
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
    server.close()
    assert not server.directory.exists()
    # The stopped process was reaped: no <defunct> entry left behind.
    assert not Path(f"/proc/{pid}").exists()


def test_redis_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install -y redis-server"):
        RedisServer()


@pytest.mark.redis
async def test_redis_cluster_spreads_slots_over_masters(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.startup_nodes) == 3
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.ports[0]}"
    redis_cluster.flushall()
    client = AsyncRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in redis_cluster.startup_nodes]
    )
    try:
        keys = [f"voice:{i}" for i in range(30)]
        for key in keys:
            await client.set(key, key)
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
        slots = {client.keyslot(key) for key in keys}
        assert len(slots) > 3
    finally:
        await client.aclose()
    # Each master holds some keys itself: the cluster really shards.
    per_node = []
    for url in redis_cluster.urls:
        with redis.Redis.from_url(url) as node:
            per_node.append(node.dbsize())
    assert sum(per_node) == 30
    assert all(count > 0 for count in per_node), per_node


# -- S3 (moto) -------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_conditional_put_if_none_match_gives_412(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="a.wav", Body=b"first", IfNoneMatch="*")
    with pytest.raises(Exception) as excinfo:
        s3.put_object(Bucket=s3_bucket, Key="a.wav", Body=b"second", IfNoneMatch="*")
    response: Any = getattr(excinfo.value, "response", {})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=s3_bucket, Key="a.wav")["Body"].read() == b"first"


@pytest.mark.s3
def test_s3_restart_keeps_port_and_reset_empties() -> None:
    with MotoS3Server() as server:
        endpoint = server.endpoint_url
        server.create_bucket("restart-bucket")
        server.reset()
        assert server.client().list_buckets()["Buckets"] == []
        server.stop()
        server.start()
        assert server.endpoint_url == endpoint
        server.create_bucket("restart-bucket")
        names = [b["Name"] for b in server.client().list_buckets()["Buckets"]]
        assert names == ["restart-bucket"]


# -- UvicornThread ---------------------------------------------------------------------------


def test_uvicorn_thread_serves_restarts_on_same_port_and_stops() -> None:
    engine = emotivoice.create_app()
    server = UvicornThread(engine.app).start()
    try:
        port = server.port
        assert httpx.get(f"{server.url}/_fake/stats").json() == {"calls": 0, "characters": 0}
        server.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/_fake/stats")
        server.start()
        assert server.port == port
        assert httpx.get(f"{server.url}/_fake/stats").status_code == 200
    finally:
        server.stop()
    assert not server.is_running


def test_free_port_is_bindable() -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        wait_for_port(port, timeout=0.05)


# -- fake EmotiVoice -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "container"), [("mp3", "MP3"), ("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG")]
)
async def test_emotivoice_speaks_its_formats_at_16k(
    fake_emotivoice: FakeEngineServer, fmt: str, container: str
) -> None:
    text = "今天天气很好 hello"
    async with httpx.AsyncClient(base_url=fake_emotivoice.url) as client:
        response = await client.post(
            SPEECH,
            json={
                "input": text,
                "voice": "8051",
                "prompt": "Happy",
                "language": "zh_us",
                "model": "emoti-voice",
                "response_format": fmt,
                "speed": 1.0,
            },
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == f"audio/{fmt}"  # not audio/mpeg: as the real one
    assert "etag" not in response.headers
    data, rate, info = decode(response.content)
    assert rate == 16_000 and info.channels == 1 and info.format == container
    # MP3 and Vorbis add encoder padding; the length is still ~0.06 s per character.
    assert len(data) / rate == pytest.approx(0.06 * len(text), abs=0.08)
    assert fake_emotivoice.controls.stats() == {"calls": 1, "characters": len(text)}


async def test_emotivoice_defaults_and_determinism(fake_emotivoice: FakeEngineServer) -> None:
    async with httpx.AsyncClient(base_url=fake_emotivoice.url) as client:
        first = await client.post(SPEECH, json={"input": "hello", "response_format": "wav"})
        again = await client.post(SPEECH, json={"input": "hello", "response_format": "wav"})
        other_voice = await client.post(
            SPEECH, json={"input": "hello", "voice": "9017", "response_format": "wav"}
        )
        other_prompt = await client.post(
            SPEECH, json={"input": "hello", "prompt": "Sad", "response_format": "wav"}
        )
        default_format = await client.post(SPEECH, json={"input": "hello"})
        missing_input = await client.post(SPEECH, json={"voice": "8051"})
    assert first.content == again.content
    assert other_voice.content != first.content
    assert other_prompt.content != first.content
    assert default_format.headers["content-type"] == "audio/mp3"
    assert missing_input.status_code == 422  # FastAPI validation, as the real pydantic model
    assert sf.info(io.BytesIO(first.content)).subtype == "PCM_16"


@pytest.mark.parametrize("speed", [0.5, 2.0])
async def test_emotivoice_speed_time_stretches_keeping_pitch(
    fake_emotivoice: FakeEngineServer, speed: float
) -> None:
    body = {"input": "a sentence of some length", "response_format": "wav"}
    async with httpx.AsyncClient(base_url=fake_emotivoice.url) as client:
        normal = await client.post(SPEECH, json=body)
        stretched = await client.post(SPEECH, json={**body, "speed": speed})
    base, rate, _ = decode(normal.content)
    fast, _, _ = decode(stretched.content)
    assert len(fast) == pytest.approx(len(base) / speed, abs=2)
    # Time-stretch, not resampling: the pitch stays put (within two FFT bins).
    resolution = rate / min(len(base), len(fast))
    assert dominant_frequency(fast, rate) == pytest.approx(
        dominant_frequency(base, rate), abs=2 * resolution
    )


async def test_emotivoice_unknown_voice_crashes_with_plain_500(
    fake_emotivoice: FakeEngineServer,
) -> None:
    async with httpx.AsyncClient(base_url=fake_emotivoice.url) as client:
        response = await client.post(SPEECH, json={"input": "hi", "voice": "1234"})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["content-type"].startswith("text/plain")
    assert fake_emotivoice.controls.stats() == {"calls": 1, "characters": 0}


# -- switches (on both fakes) ----------------------------------------------------------------


def speech_call(server: FakeEngineServer) -> tuple[dict[str, Any], dict[str, str]]:
    """A valid request body and headers for whichever fake ``server`` is."""
    if server.engine.name == "openai":
        body = {"model": "tts-1", "input": "hello", "voice": "alloy", "response_format": "wav"}
        return body, OPENAI_AUTH
    return {"input": "hello", "response_format": "wav"}, {}


@pytest.fixture(params=["emotivoice", "openai"])
def fake(request: pytest.FixtureRequest) -> FakeEngineServer:
    """Each fake in turn, reset."""
    server: FakeEngineServer = request.getfixturevalue(f"fake_{request.param}")
    return server


async def test_switch_latency(fake: FakeEngineServer) -> None:
    body, headers = speech_call(fake)
    fake.controls.latency_s = 0.3
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        started = time.monotonic()
        response = await client.post(SPEECH, json=body)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_switch_fail_next_n(fake: FakeEngineServer) -> None:
    body, headers = speech_call(fake)
    fake.controls.update(fail_next_n=2, status_code=503)
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        responses = [await client.post(SPEECH, json=body) for _ in range(3)]
    assert [r.status_code for r in responses] == [503, 503, 200]
    if fake.engine.name == "openai":
        error = responses[0].json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "server_error"
    else:
        assert responses[0].text == "Service Unavailable"
    assert fake.controls.stats() == {"calls": 3, "characters": 5}


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_switch_reset_connection_is_a_transport_error(http: str) -> None:
    engine = emotivoice.create_app()
    with UvicornThread(engine.app, http=http) as server:
        engine.controls.reset_connection_next_n = 1
        async with httpx.AsyncClient(base_url=server.url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(SPEECH, json={"input": "hi"})
            assert (await client.post(SPEECH, json={"input": "hi"})).status_code == 200
        assert engine.controls.calls == 2


async def test_switch_reset_connection_on_shared_fake(fake: FakeEngineServer) -> None:
    body, headers = speech_call(fake)
    fake.controls.reset_connection_next_n = 1
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(SPEECH, json=body)
        assert (await client.post(SPEECH, json=body)).status_code == 200


async def test_switch_garbage(fake: FakeEngineServer) -> None:
    body, headers = speech_call(fake)
    fake.controls.garbage_next_n = 1
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        garbage = await client.post(SPEECH, json=body)
        good = await client.post(SPEECH, json=body)
    assert garbage.status_code == 200
    assert garbage.headers["content-type"] == "audio/wav"
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(garbage.content))
    assert decode(good.content)[1] in (16_000, 24_000)


async def test_switch_hang_times_out_then_release_answers(fake: FakeEngineServer) -> None:
    body, headers = speech_call(fake)
    fake.controls.hang = True
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(SPEECH, json=body, timeout=0.3)
        pending = asyncio.create_task(client.post(SPEECH, json=body, timeout=5))
        await asyncio.sleep(0.3)
        assert not pending.done()
        fake.controls.hang = False  # release
        response = await pending
    assert response.status_code == 200
    assert fake.controls.calls == 2


async def test_control_routes_for_other_processes(fake: FakeEngineServer) -> None:
    body, headers = speech_call(fake)
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        switches = (await client.post("/_fake/controls", json={"fail_next_n": 1})).json()
        assert switches["fail_next_n"] == 1
        assert (await client.post(SPEECH, json=body)).status_code == 500
        assert (await client.post(SPEECH, json=body)).status_code == 200
        assert (await client.get("/_fake/stats")).json() == {"calls": 2, "characters": 5}
        assert (await client.get("/_fake/requests")).json() == [body, body]
        bad = await client.post("/_fake/controls", json={"no_such_switch": 1})
        assert bad.status_code == 422
        await client.post("/_fake/controls", json={"latency_s": 0.5, "hang": True})
        assert fake.controls.latency_s == 0.5 and fake.controls.hang is True
        await client.post("/_fake/reset")
        assert (await client.get("/_fake/stats")).json() == {"calls": 0, "characters": 0}
    assert fake.controls.switches() == FakeControls().switches()


def test_controls_are_thread_safe_counters() -> None:
    controls = FakeControls(fail_next_n=3)
    assert [controls.take("fail_next_n") for _ in range(5)] == [True, True, True, False, False]
    controls.record({"input": "x"})
    controls.reset()
    assert controls.calls == 0 and controls.requests == [] and controls.fail_next_n == 0


# -- fake OpenAI -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type", "container"),
    [
        ("mp3", "audio/mpeg", "MP3"),
        ("opus", "audio/opus", "OGG"),
        ("flac", "audio/flac", "FLAC"),
        ("wav", "audio/wav", "WAV"),
    ],
)
async def test_openai_formats_at_24k(
    fake_openai: FakeEngineServer, fmt: str, content_type: str, container: str
) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini-tts", "input": "Hello there", "voice": "coral"}
    body |= {"instructions": "Speak cheerfully.", "response_format": fmt, "speed": 1.0}
    async with httpx.AsyncClient(base_url=fake_openai.url, headers=OPENAI_AUTH) as client:
        response = await client.post(SPEECH, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    data, rate, info = decode(response.content)
    assert rate == 24_000 and info.channels == 1 and info.format == container
    assert len(data) / rate == pytest.approx(0.06 * len(body["input"]), abs=0.1)
    assert fake_openai.controls.requests == [body]


async def test_openai_pcm_is_raw_24k_16bit_and_default_is_mp3(
    fake_openai: FakeEngineServer,
) -> None:
    body = {"model": "tts-1", "input": "abcd", "voice": "alloy"}
    async with httpx.AsyncClient(base_url=fake_openai.url, headers=OPENAI_AUTH) as client:
        pcm = await client.post(SPEECH, json={**body, "response_format": "pcm"})
        wav = await client.post(SPEECH, json={**body, "response_format": "wav"})
        default = await client.post(SPEECH, json=body)
        fast = await client.post(SPEECH, json={**body, "response_format": "pcm", "speed": 4.0})
    assert pcm.headers["content-type"] == "audio/pcm"
    samples = np.frombuffer(pcm.content, dtype="<i2")
    assert samples.size == round(0.06 * 24_000) * 4
    wav_samples, _ = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert np.array_equal(samples, wav_samples)
    assert default.headers["content-type"] == "audio/mpeg"
    assert len(fast.content) // 2 == pytest.approx(samples.size / 4, abs=2)


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, None), ({"Authorization": "Bearer sk-wrong"}, "invalid_api_key")],
)
async def test_openai_requires_the_key(
    fake_openai: FakeEngineServer, headers: dict[str, str], code: str | None
) -> None:
    async with httpx.AsyncClient(base_url=fake_openai.url, headers=headers) as client:
        response = await client.post(
            SPEECH, json={"model": "tts-1", "input": "hi", "voice": "alloy"}
        )
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == code


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"cache_key": "x"}, "cache_key"),  # undocumented fields are refused, as by OpenAI
        ({"input": "x" * 4097}, "input"),
        ({"input": ""}, "input"),
        ({"voice": "8051"}, "voice"),
        ({"model": "emoti-voice"}, "model"),
        ({"speed": 4.5}, "speed"),
        ({"speed": 0.2}, "speed"),
        ({"response_format": "mp4"}, "response_format"),
        ({"response_format": "aac"}, "response_format"),  # valid, but the fake cannot encode
    ],
)
async def test_openai_rejects_invalid_fields_with_400(
    fake_openai: FakeEngineServer, change: dict[str, Any], param: str
) -> None:
    body = {"model": "tts-1", "input": "hi", "voice": "alloy"} | change
    async with httpx.AsyncClient(base_url=fake_openai.url, headers=OPENAI_AUTH) as client:
        response = await client.post(SPEECH, json=body)
        missing = await client.post(SPEECH, json={"model": "tts-1", "voice": "alloy"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    assert fake_openai.controls.characters == 0


def test_openai_without_key_configured_accepts_anonymous_calls() -> None:
    engine = openai_tts.create_app()
    with UvicornThread(engine.app) as server:
        response = httpx.post(
            f"{server.url}{SPEECH}", json={"model": "tts-1", "input": "hi", "voice": "nova"}
        )
    assert response.status_code == 200


# -- standalone ------------------------------------------------------------------------------


def test_emotivoice_runs_standalone_for_benchmarks() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.emotivoice", "--port", str(port), "--latency", "0.1"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=20)
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        response = httpx.post(f"{url}{SPEECH}", json={"input": "你好世界"}, timeout=10)
        assert time.monotonic() - started >= 0.1
        assert response.headers["content-type"] == "audio/mp3"
        assert httpx.get(f"{url}/_fake/stats").json() == {"calls": 1, "characters": 4}
        httpx.post(f"{url}/_fake/controls", json={"fail_next_n": 1})
        assert httpx.post(f"{url}{SPEECH}", json={"input": "x"}).status_code == 500
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode in (0, -15), stderr.decode()
