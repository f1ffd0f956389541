"""Engine streams: eSpeak hands on its callback's buffers, the OpenAI engine reads the upstream
body as it arrives, and `ResilientEngine` retries a stream only before its first chunk."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import numpy as np
import pytest

from tests.fixtures_servers import FAKE_OPENAI_KEY, FakeEngineServer
from voicecache.codecs import PCM_RATE, Audio
from voicecache.engines.espeak import EspeakEngine
from voicecache.engines.openai import OpenAIEngine
from voicecache.engines.resilience import ResilienceConfig, ResilientEngine
from voicecache.errors import EngineTimeout, EngineUnavailable
from voicecache.model import SynthesisJob

LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog, then it runs away."] * 12)
# 40 characters: 2.4 s of fake audio, ten chunks of 0.25 s.
LINE = SynthesisJob("A line that the fake renders in chunks.!", "alloy")


async def _received(chunks: AsyncGenerator[Audio, None]) -> list[tuple[float, Audio]]:
    return [(time.monotonic(), chunk) async for chunk in chunks]


def _openai(server: FakeEngineServer) -> OpenAIEngine:
    return OpenAIEngine(base_url=server.url, api_key=FAKE_OPENAI_KEY)


async def _no_sleep(_: float) -> None:
    pass


async def test_espeak_hands_on_chunks_while_it_synthesizes() -> None:
    engine = EspeakEngine()
    received = await _received(engine.stream(SynthesisJob(LONG_TEXT, "en")))
    whole = await engine.synthesize(SynthesisJob(LONG_TEXT, "en"))
    assert len(received) > 1 and engine.calls == 2
    assert {chunk.sample_rate for _, chunk in received} == {whole.sample_rate}
    streamed = sum(len(chunk.samples) for _, chunk in received)
    # eSpeak is not bit-exact between runs; the length of a render is what must agree.
    assert abs(streamed - len(whole.samples)) < 0.01 * len(whole.samples)


async def test_espeak_streams_a_speed_beyond_its_rates_as_one_stretched_chunk() -> None:
    engine = EspeakEngine()
    received = await _received(engine.stream(SynthesisJob("Quickly now.", "en", speed=4.0)))
    assert len(received) == 1 and engine.calls == 1


async def test_openai_stream_asks_for_pcm_and_yields_chunks_as_they_arrive(
    fake_openai: FakeEngineServer,
) -> None:
    fake_openai.controls.update(first_chunk_delay_s=0.05, chunk_interval_s=0.05)
    engine = _openai(fake_openai)
    try:
        received = await _received(engine.stream(LINE))
        whole = await engine.synthesize(LINE)
    finally:
        await engine.aclose()
    streamed_body, whole_body = fake_openai.controls.requests
    assert streamed_body["response_format"] == "pcm" and "stream_format" not in streamed_body
    assert whole_body["response_format"] == "wav"
    (log, _) = fake_openai.controls.streams
    assert log.completed and log.chunks == 10 and log.last_chunk is not None
    assert len(received) > 1
    assert received[0][0] < log.last_chunk  # the first chunk came before the engine finished
    samples = np.concatenate([chunk.samples for _, chunk in received])
    assert {chunk.sample_rate for _, chunk in received} == {PCM_RATE}
    assert np.array_equal(samples, whole.samples)


async def test_an_upstream_cut_short_is_an_error_after_the_chunks_it_sent(
    fake_openai: FakeEngineServer,
) -> None:
    fake_openai.controls.update(cut_next_n=1, chunk_interval_s=0.02)
    engine = _openai(fake_openai)
    received: list[Audio] = []
    try:
        with pytest.raises(EngineUnavailable, match="broke off its stream") as caught:
            async for chunk in engine.stream(LINE):
                received.append(chunk)
    finally:
        await engine.aclose()
    assert caught.value.retryable and received  # half of the audio came first
    assert fake_openai.controls.streams[0].cut


async def test_a_resilient_stream_is_retried_before_its_first_chunk(
    fake_openai: FakeEngineServer,
) -> None:
    fake_openai.controls.update(fail_next_n=1, status_code=500)
    engine = ResilientEngine(_openai(fake_openai), ResilienceConfig(attempts=3), sleep=_no_sleep)
    try:
        received = await _received(engine.stream(LINE))
    finally:
        await engine.aclose()
    assert received and engine.calls == 2 and engine.retries == 1 and engine.attempts == 2
    assert engine.state == "closed" and engine.in_flight == 0


async def test_a_resilient_stream_is_never_retried_after_a_chunk_was_handed_on(
    fake_openai: FakeEngineServer,
) -> None:
    fake_openai.controls.update(cut_next_n=1, chunk_interval_s=0.02)
    config = ResilienceConfig(attempts=3, breaker_failures=1)
    engine = ResilientEngine(_openai(fake_openai), config, sleep=_no_sleep)
    try:
        with pytest.raises(EngineUnavailable):
            async for _ in engine.stream(LINE):
                pass
    finally:
        await engine.aclose()
    # One render only: a retry would splice a second render onto the first one's half.
    assert fake_openai.controls.calls == 1 and engine.retries == 0
    assert engine.failures == 1 and engine.state == "open" and engine.in_flight == 0


async def test_a_resilient_stream_has_a_deadline_for_the_whole_stream(
    fake_openai: FakeEngineServer,
) -> None:
    fake_openai.controls.update(chunk_interval_s=0.3)  # ten chunks: ~3 s in all
    config = ResilienceConfig(attempts=1, attempt_timeout=0.5)
    engine = ResilientEngine(_openai(fake_openai), config, sleep=_no_sleep)
    received: list[Audio] = []
    try:
        with pytest.raises(EngineTimeout, match="did not finish its stream"):
            async for chunk in engine.stream(LINE):
                received.append(chunk)
    finally:
        await engine.aclose()
    assert received and engine.timeouts == 1 and engine.in_flight == 0


async def test_a_consumer_leaving_early_frees_the_slot_and_judges_nothing(
    fake_openai: FakeEngineServer,
) -> None:
    fake_openai.controls.update(chunk_interval_s=0.02)
    engine = ResilientEngine(_openai(fake_openai), ResilienceConfig(max_concurrency=1))
    try:
        chunks = engine.stream(LINE)
        await anext(chunks)
        assert engine.in_flight == 1
        await chunks.aclose()
        assert engine.in_flight == 0 and engine.failures == 0
        assert len(await _received(engine.stream(LINE))) > 1  # the one slot is free again
    finally:
        await engine.aclose()


async def test_the_default_stream_is_the_whole_render_once() -> None:
    class Whole(EspeakEngine):
        async def stream(self, job: SynthesisJob) -> AsyncGenerator[Audio, None]:
            async for chunk in super(EspeakEngine, self).stream(job):
                yield chunk

    engine = Whole()
    received = await _received(engine.stream(SynthesisJob(LONG_TEXT, "en")))
    assert len(received) == 1 and engine.calls == 1
