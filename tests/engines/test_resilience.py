"""Resilience over real HTTP: retries, timeouts, the circuit breaker and back-pressure of
`ResilientEngine` against the fake engines, and what clients of the app see when the engine
fails (502/503/504 with details, stale audio, hits that keep flowing)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveApp
from tests.fixtures_servers import FakeEngineServer
from voicecache.bootstrap import build
from voicecache.engines.emotivoice import EmotiVoiceEngine
from voicecache.engines.openai import OpenAIEngine
from voicecache.engines.resilience import ResilienceConfig, ResilientEngine
from voicecache.errors import EngineError, EngineTimeout, EngineUnavailable
from voicecache.model import SynthesisJob
from voicecache.settings import Settings

JOB = SynthesisJob("resilient line", "8051")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A wrapped EmotiVoice engine with recorded backoff sleeps and a hand-moved clock."""

    def __init__(self, server: FakeEngineServer, **limits: Any) -> None:
        self.sleeps: list[float] = []
        self.clock = FakeClock()
        config = ResilienceConfig(**{"attempt_timeout": 5.0, **limits})
        self.engine = ResilientEngine(
            EmotiVoiceEngine(url=server.url),
            config,
            sleep=self._sleep,
            clock=self.clock,
            jitter=lambda: 0.5,  # factor 1.0: the bare exponential schedule
        )

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def harness(fake_emotivoice: FakeEngineServer) -> Callable[..., Harness]:
    """Factory for wrapped engines against the (reset) fake EmotiVoice."""

    def make(**limits: Any) -> Harness:
        return Harness(fake_emotivoice, **limits)

    return make


# -- retries -----------------------------------------------------------------------------------


async def test_retries_5xx_with_exponential_backoff(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness()
    fake_emotivoice.controls.fail_next_n = 2
    audio = await h.engine.synthesize(JOB)
    await h.engine.aclose()
    assert audio.duration > 0
    assert fake_emotivoice.controls.calls == 3 and h.engine.calls == 3
    assert h.engine.retries == 2 and h.engine.failures == 2
    assert h.sleeps == [1.0, 2.0]
    assert h.engine.state == "closed"


async def test_gives_up_after_the_attempts(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(attempts=3)
    fake_emotivoice.controls.update(fail_next_n=10, status_code=503)
    with pytest.raises(EngineError) as caught:
        await h.engine.synthesize(JOB)
    await h.engine.aclose()
    assert caught.value.status_code == 502 and caught.value.upstream_status == 503
    assert fake_emotivoice.controls.calls == 3 and h.engine.retries == 2


async def test_connection_resets_are_retried(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness()
    fake_emotivoice.controls.reset_connection_next_n = 2
    audio = await h.engine.synthesize(JOB)
    await h.engine.aclose()
    assert audio.duration > 0 and fake_emotivoice.controls.calls == 3
    assert h.engine.retries == 2


async def test_jitter_spreads_the_backoff(
    fake_emotivoice: FakeEngineServer,
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    values = iter([0.0, 0.99])
    engine = ResilientEngine(
        EmotiVoiceEngine(url=fake_emotivoice.url),
        ResilienceConfig(base_delay=0.5),
        sleep=sleep,
        jitter=lambda: next(values),
    )
    fake_emotivoice.controls.fail_next_n = 2
    await engine.synthesize(JOB)
    await engine.aclose()
    assert sleeps == [pytest.approx(0.25), pytest.approx(0.5 * 2 * 1.49)]


async def test_no_retry_on_4xx(fake_openai: FakeEngineServer) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    engine = ResilientEngine(
        OpenAIEngine(base_url=fake_openai.url, api_key="sk-wrong"),
        ResilienceConfig(breaker_failures=1),
        sleep=sleep,
    )
    for _ in range(3):
        with pytest.raises(EngineError) as caught:
            await engine.synthesize(SynthesisJob("hi", "alloy"))
        assert caught.value.upstream_status == 401
    await engine.aclose()
    assert fake_openai.controls.calls == 3  # one each, never retried
    assert sleeps == [] and engine.retries == 0
    # A 4xx proves the engine is up: the breaker (1 failure to open) stays closed.
    assert engine.state == "closed" and engine.failures == 0


async def test_garbage_is_not_retried(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness()
    fake_emotivoice.controls.garbage_next_n = 1
    with pytest.raises(EngineError) as caught:
        await h.engine.synthesize(JOB)
    await h.engine.aclose()
    assert caught.value.status_code == 502 and fake_emotivoice.controls.calls == 1


async def test_hang_times_out_each_attempt(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(attempts=2, attempt_timeout=0.2)
    fake_emotivoice.controls.hang = True
    started = time.perf_counter()
    with pytest.raises(EngineTimeout) as caught:
        await h.engine.synthesize(JOB)
    elapsed = time.perf_counter() - started
    fake_emotivoice.controls.hang = False
    await h.engine.aclose()
    assert caught.value.status_code == 504
    assert 0.4 <= elapsed < 1.5
    assert h.engine.timeouts == 2 and fake_emotivoice.controls.calls == 2


async def test_httpx_read_timeout_is_an_engine_timeout(
    fake_emotivoice: FakeEngineServer,
) -> None:
    engine = EmotiVoiceEngine(url=fake_emotivoice.url, timeout=0.2)
    fake_emotivoice.controls.hang = True
    with pytest.raises(EngineTimeout) as caught:
        await engine.synthesize(JOB)
    fake_emotivoice.controls.hang = False
    await engine.aclose()
    assert caught.value.retryable


async def test_unreachable_engine_is_503_and_retryable() -> None:
    from tests.servers import free_port

    engine = EmotiVoiceEngine(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EngineUnavailable) as caught:
        await engine.synthesize(JOB)
    await engine.aclose()
    assert caught.value.retryable and "unreachable" in caught.value.detail


# -- circuit breaker ---------------------------------------------------------------------------


async def test_breaker_opens_rejects_then_probes_and_closes(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(attempts=1, breaker_failures=3, breaker_cooldown=30.0)
    fake_emotivoice.controls.fail_next_n = 4
    for _ in range(3):
        with pytest.raises(EngineError):
            await h.engine.synthesize(JOB)
    assert h.engine.state == "open" and fake_emotivoice.controls.calls == 3

    with pytest.raises(EngineUnavailable) as rejected:
        await h.engine.synthesize(JOB)
    assert rejected.value.status_code == 503 and rejected.value.retry_after == 30.0
    assert fake_emotivoice.controls.calls == 3 and h.engine.rejected_open == 1

    h.clock.now += 30.0
    assert h.engine.state == "half_open"
    with pytest.raises(EngineError):  # the probe fails: open for another cool-down
        await h.engine.synthesize(JOB)
    assert h.engine.state == "open" and fake_emotivoice.controls.calls == 4

    h.clock.now += 30.0
    audio = await h.engine.synthesize(JOB)  # the probe succeeds
    await h.engine.aclose()
    assert audio.duration > 0 and h.engine.state == "closed"
    assert h.engine.breaker_transitions == {"open": 2, "half_open": 2, "closed": 1}


async def test_half_open_lets_one_probe_through(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(attempts=1, breaker_failures=1, breaker_cooldown=5.0)
    fake_emotivoice.controls.fail_next_n = 1
    with pytest.raises(EngineError):
        await h.engine.synthesize(JOB)
    h.clock.now += 5.0
    fake_emotivoice.controls.latency_s = 0.2
    results = await asyncio.gather(
        *(h.engine.synthesize(JOB) for _ in range(3)), return_exceptions=True
    )
    await h.engine.aclose()
    assert sum(isinstance(r, EngineUnavailable) for r in results) == 2
    assert fake_emotivoice.controls.calls == 2 and h.engine.state == "closed"


async def test_retries_stop_when_the_breaker_opens(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(attempts=5, breaker_failures=2)
    fake_emotivoice.controls.fail_next_n = 10
    with pytest.raises(EngineUnavailable):
        await h.engine.synthesize(JOB)
    await h.engine.aclose()
    assert fake_emotivoice.controls.calls == 2 and h.engine.state == "open"


# -- back-pressure -----------------------------------------------------------------------------


async def test_queue_bound_rejects_with_retry_after(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(max_concurrency=1, max_queue=1)
    fake_emotivoice.controls.latency_s = 0.3
    first = asyncio.create_task(h.engine.synthesize(JOB))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(h.engine.synthesize(SynthesisJob("queued", "8051")))
    await asyncio.sleep(0.05)
    assert h.engine.in_flight == 1 and h.engine.queued == 1
    with pytest.raises(EngineUnavailable) as caught:
        await h.engine.synthesize(SynthesisJob("refused", "8051"))
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert "busy" in caught.value.detail
    assert (await first).duration > 0 and (await second).duration > 0
    await h.engine.aclose()
    assert fake_emotivoice.controls.calls == 2 and h.engine.rejected_queue == 1
    assert h.engine.state == "closed"  # refusals never count against the engine


async def test_concurrency_is_bounded_upstream(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(max_concurrency=2, max_queue=10)
    fake_emotivoice.controls.latency_s = 0.1
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, h.engine.in_flight)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    jobs = [SynthesisJob(f"line {i}", "8051") for i in range(6)]
    results = await asyncio.gather(*(h.engine.synthesize(j) for j in jobs))
    watcher.cancel()
    await h.engine.aclose()
    assert len(results) == 6 and peak == 2 and fake_emotivoice.controls.calls == 6


# -- through the app ---------------------------------------------------------------------------


def _emotivoice_settings(tmp_path: Path, server: FakeEngineServer, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        engine="emotivoice",
        emotivoice_url=server.url,
        engine_retry_base_delay=0.01,
        **extra,
    )


def test_app_retries_then_serves(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(_emotivoice_settings(tmp_path, fake_emotivoice))
    fake_emotivoice.controls.fail_next_n = 2
    response = live.client.post("/tts", json={"text": "third time lucky", "voice": "8051"})
    assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
    assert live.engine_calls("emotivoice") == 3
    assert live.gateway.engines["emotivoice"].retries == 2  # type: ignore[attr-defined]


def test_app_hang_is_504_within_the_timeout(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(
        _emotivoice_settings(tmp_path, fake_emotivoice, emotivoice_timeout=0.3, engine_retries=1)
    )
    fake_emotivoice.controls.hang = True
    started = time.perf_counter()
    response = live.client.post("/tts", json={"text": "never answered", "voice": "8051"})
    elapsed = time.perf_counter() - started
    fake_emotivoice.controls.hang = False
    assert response.status_code == 504
    assert "did not answer within 0.3 s" in response.json()["detail"]
    assert elapsed < 1.5


def test_app_queue_full_is_503_with_retry_after(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(
        _emotivoice_settings(
            tmp_path, fake_emotivoice, emotivoice_max_concurrency=1, engine_max_queue=0
        )
    )
    fake_emotivoice.controls.hang = True
    slow = _post_in_thread(live, {"text": "occupies the slot", "voice": "8051"})
    _wait_for(lambda: fake_emotivoice.controls.calls == 1)
    refused = live.client.post("/tts", json={"text": "one too many", "voice": "8051"})
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "busy" in refused.json()["detail"]
    fake_emotivoice.controls.hang = False
    slow.join(5)
    assert slow.response is not None and slow.response.status_code == 200


def test_hits_keep_flowing_while_the_engine_hangs(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(
        _emotivoice_settings(
            tmp_path, fake_emotivoice, emotivoice_max_concurrency=1, engine_max_queue=5
        )
    )
    cached = {"text": "already cached", "voice": "8051"}
    assert live.client.post("/tts", json=cached).headers["x-cache"] == "MISS"
    fake_emotivoice.controls.hang = True
    misses = [_post_in_thread(live, {"text": f"miss {i}", "voice": "8051"}) for i in range(3)]
    engine = live.gateway.engines["emotivoice"]
    _wait_for(lambda: engine.queued == 2)  # type: ignore[attr-defined]
    assert fake_emotivoice.controls.calls == 2  # the cached line, then one miss in flight
    for _ in range(20):
        started = time.perf_counter()
        hit = live.client.post("/tts", json=cached)
        assert hit.headers["x-cache"] == "HIT" and time.perf_counter() - started < 0.5
    assert all(m.response is None for m in misses)  # still waiting on the engine
    fake_emotivoice.controls.hang = False
    for m in misses:
        m.join(10)
        assert m.response is not None and m.response.status_code == 200


def test_open_breaker_fails_misses_fast_and_shows_in_healthz(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(
        _emotivoice_settings(tmp_path, fake_emotivoice, engine_retries=1, breaker_failures=2)
    )
    cached = {"text": "served from cache", "voice": "8051"}
    live.client.post("/tts", json=cached)
    fake_emotivoice.controls.fail_next_n = 100
    for i in range(2):
        failed = live.client.post("/tts", json={"text": f"fail {i}", "voice": "8051"})
        assert failed.status_code == 502 and "HTTP 500" in failed.json()["detail"]
    calls = fake_emotivoice.controls.calls
    refused = live.client.post("/tts", json={"text": "fail 3", "voice": "8051"})
    assert refused.status_code == 503 and "circuit open" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert fake_emotivoice.controls.calls == calls
    assert live.client.post("/tts", json=cached).headers["x-cache"] == "HIT"
    health = live.client.get("/healthz").json()
    assert health["engines"]["emotivoice"]["state"] == "open"


def test_stale_is_served_when_the_engine_fails(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    now = [1_000_000.0]
    settings = _emotivoice_settings(
        tmp_path, fake_emotivoice, engine_retries=1, default_ttl=60, grace=3600
    )
    live = serve(settings, services=build(settings, clock=lambda: now[0]))
    line = {"text": "stale but fine", "voice": "8051"}
    fresh = live.client.post("/tts", json=line)
    now[0] += 120  # expired, within grace
    fake_emotivoice.controls.fail_next_n = 1
    stale = live.client.post("/tts", json=line)
    assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
    assert stale.content == fresh.content
    refreshed = live.client.post("/tts", json=line)  # the engine is back: a fresh render
    assert refreshed.headers["x-cache"] == "MISS"
    now[0] += 7200  # beyond grace: no stale copy to fall back on
    fake_emotivoice.controls.fail_next_n = 1
    gone = live.client.post("/tts", json=line)
    assert gone.status_code == 502 and "HTTP 500" in gone.json()["detail"]


class _Poster(threading.Thread):
    def __init__(self, live: LiveApp, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url = live.url
        self.body = body
        self.response: httpx.Response | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            self.response = client.post("/tts", json=self.body)


def _post_in_thread(live: LiveApp, body: dict[str, Any]) -> _Poster:
    poster = _Poster(live, body)
    poster.start()
    return poster


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


async def test_upstream_429_is_503_with_retry_after_and_not_retried(
    fake_openai: FakeEngineServer,
) -> None:
    from tests.fixtures_servers import FAKE_OPENAI_KEY

    engine = ResilientEngine(
        OpenAIEngine(base_url=fake_openai.url, api_key=FAKE_OPENAI_KEY),
        ResilienceConfig(breaker_failures=1),
    )
    fake_openai.controls.update(fail_next_n=1, status_code=429)
    with pytest.raises(EngineUnavailable) as caught:
        await engine.synthesize(SynthesisJob("hi", "alloy"))
    await engine.aclose()
    assert caught.value.status_code == 503 and caught.value.retry_after == 1.0
    assert "Rate limit" in caught.value.detail
    assert fake_openai.controls.calls == 1 and engine.state == "closed"


async def test_waiting_for_a_slot_is_bounded(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(max_concurrency=1, max_queue=5, queue_timeout=0.1)
    fake_emotivoice.controls.latency_s = 0.4
    first = asyncio.create_task(h.engine.synthesize(JOB))
    await asyncio.sleep(0.05)
    with pytest.raises(EngineUnavailable) as caught:
        await h.engine.synthesize(SynthesisJob("waits too long", "8051"))
    assert "no free slot within 0.1 s" in caught.value.detail
    assert (await first).duration > 0
    await h.engine.aclose()
    assert h.engine.queued == 0 and h.engine.rejected_queue == 1


async def test_a_cancelled_probe_frees_the_half_open_slot(
    fake_emotivoice: FakeEngineServer, harness: Callable[..., Harness]
) -> None:
    h = harness(attempts=1, breaker_failures=1, breaker_cooldown=5.0)
    fake_emotivoice.controls.fail_next_n = 1
    with pytest.raises(EngineError):
        await h.engine.synthesize(JOB)
    h.clock.now += 5.0
    fake_emotivoice.controls.hang = True
    probe = asyncio.create_task(h.engine.synthesize(JOB))
    await asyncio.sleep(0.1)
    probe.cancel()  # e.g. the client went away
    with pytest.raises(asyncio.CancelledError):
        await probe
    fake_emotivoice.controls.hang = False
    assert h.engine.state == "half_open" and h.engine.in_flight == 0
    audio = await h.engine.synthesize(JOB)  # the next caller may probe
    await h.engine.aclose()
    assert audio.duration > 0 and h.engine.state == "closed"


def test_unknown_speaker_is_422_and_cannot_open_the_breaker(
    tmp_path: Path, serve: Callable[..., LiveApp], fake_emotivoice: FakeEngineServer
) -> None:
    live = serve(
        _emotivoice_settings(tmp_path, fake_emotivoice, engine_retries=1, breaker_failures=2)
    )
    assert live.client.post("/tts", json={"text": "known", "voice": "8051"}).status_code == 200
    for _ in range(3):
        bad = live.client.post("/tts", json={"text": "who?", "voice": "424242"})
        assert bad.status_code == 422 and "unknown speaker" in bad.json()["detail"]
    assert fake_emotivoice.controls.calls == 4  # one each, never retried
    assert live.client.get("/healthz").json()["engines"]["emotivoice"]["state"] == "closed"
    # A real outage (every speaker failing) still counts: known speakers fail with 502s.
    fake_emotivoice.controls.fail_next_n = 100
    for i in range(2):
        down = live.client.post("/tts", json={"text": f"down {i}", "voice": "8051"})
        assert down.status_code == 502
    assert live.client.get("/healthz").json()["engines"]["emotivoice"]["state"] == "open"
