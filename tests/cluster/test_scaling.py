"""Scaling out over real HTTP: replicas sharing a real Redis, Redis dying under load, and
coalescing across two `voicecache serve` processes counted by the fake engine server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import LiveApp
from tests.fixtures_servers import FakeEngineServer
from tests.servers import RedisServer, free_port
from voicecache.cache.tiers.redis import RedisTier
from voicecache.settings import Settings

pytestmark = pytest.mark.redis


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this module may kill and restart (the session's one stays untouched)."""
    with RedisServer() as server:
        yield server


def replica_settings(tmp_path: Path, redis_url: str, name: str, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path / name,
        tiers="memory,redis",
        redis_url=redis_url,
        redis_timeout=0.2,
        **extra,  # type: ignore[arg-type]
    )


def tts(line: int | str) -> dict[str, str]:
    return {"text": f"Line number {line} of the scaling test.", "voice": "en"}


def test_a_line_stored_by_one_replica_is_a_redis_hit_on_another(
    serve: Callable[..., LiveApp], redis_url: str, tmp_path: Path
) -> None:
    first = serve(replica_settings(tmp_path, redis_url, "a"))
    second = serve(replica_settings(tmp_path, redis_url, "b"))
    made = first.client.post("/tts", json=tts("shared"))
    assert made.headers["X-Cache"] == "MISS"
    hit = second.client.post("/tts", json=tts("shared"))
    assert hit.status_code == 200 and hit.content == made.content
    assert hit.headers["X-Cache"] == "HIT" and hit.headers["X-Cache-Tier"] == "redis"
    again = second.client.post("/tts", json=tts("shared"))  # promoted to memory
    assert again.headers["X-Cache-Tier"] == "memory"
    assert second.engine_calls() == 0


async def test_redis_killed_mid_load_then_restarted(
    serve: Callable[..., LiveApp], own_redis: RedisServer, tmp_path: Path
) -> None:
    live = serve(replica_settings(tmp_path, own_redis.url, "a", redis_breaker_cooldown=0.3))
    statuses: list[int] = []

    async def load(client: httpx.AsyncClient, lines: range) -> None:
        async def one(line: int) -> None:
            response = await client.post("/tts", json=tts(line if line % 2 else line % 20))
            statuses.append(response.status_code)

        await asyncio.gather(*(one(line) for line in lines))

    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        await load(client, range(0, 40))
        during = asyncio.ensure_future(load(client, range(40, 140)))
        await asyncio.sleep(0.02)
        own_redis.kill()  # crash while requests are in flight
        await during
        tier = next(t for t in live.gateway.cache.tiers if isinstance(t, RedisTier))
        assert tier.redis.errors > 0  # requests in flight at the crash fail over Redis: counted
        errors, skipped = tier.redis.errors, tier.redis.skipped
        started = time.monotonic()
        await load(client, range(140, 180))  # Redis still dead: the circuit is open
        probes = 1 + (time.monotonic() - started) / 0.3
        assert statuses and set(statuses) == {200}, "Redis trouble must never be a 5xx"
        assert tier.redis.skipped - skipped >= 20  # most requests never tried Redis …
        assert tier.redis.errors - errors <= probes  # … except one probe per cooldown

        own_redis.start()  # empty: persistence is off
        await asyncio.sleep(0.3)  # the breaker's cooldown
        deadline = time.monotonic() + 5
        with redis.Redis.from_url(own_redis.url) as raw:
            while True:  # the first request after the cooldown probes and closes the circuit
                response = await client.post("/tts", json=tts(f"after restart {time.time()}"))
                assert response.status_code == 200
                if raw.keys("vc:e:*"):
                    break
                assert time.monotonic() < deadline, "gateway never used Redis again"
                await asyncio.sleep(0.05)
    assert tier.breaker.state == "closed"


def _spawn_replica(env: dict[str, str], port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**env, "VOICECACHE_PORT": str(port), "VOICECACHE_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "voicecache", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"replica exited with {process.returncode}: {error[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"replica at {url} not ready after {timeout}s")


@pytest.mark.slow
async def test_two_processes_coalesce_200_identical_misses_into_one_engine_call(
    redis_url: str, fake_emotivoice: FakeEngineServer, tmp_path: Path
) -> None:
    fake_emotivoice.controls.latency_s = 0.3  # requests arrive while the first one runs
    env = {
        **os.environ,
        "VOICECACHE_TIERS": "memory,redis",
        "VOICECACHE_REDIS_URL": redis_url,
        "VOICECACHE_ENGINE": "emotivoice",
        "VOICECACHE_EMOTIVOICE_URL": fake_emotivoice.url,
        "VOICECACHE_LOG_LEVEL": "warning",
        # The 2 cores here also run the fake engine, this client and the other replica: a
        # cold burst of 100 requests can stall a replica's event loop past the production
        # default of 250 ms, which would open the circuit and (rightly) skip the lock.
        "VOICECACHE_REDIS_TIMEOUT": "2s",
    }
    ports = [free_port(), free_port()]
    processes = [_spawn_replica(env, p, tmp_path / f"r{p}") for p in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for process, url in zip(processes, urls, strict=True):
            await asyncio.to_thread(_wait_ready, process, url)
        body = {"text": "欢迎来到直播间，谢谢你的礼物！", "voice": "8051", "format": "mp3"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            responses = await asyncio.gather(
                *(client.post(f"{urls[n % 2]}/tts", json=body) for n in range(200))
            )
        assert [r.status_code for r in responses] == [200] * 200
        assert fake_emotivoice.controls.calls == 1  # counted by the engine server itself
        assert len({r.content for r in responses}) == 1
        statuses = [r.headers["X-Cache"] for r in responses]
        assert statuses.count("MISS") == 1
        assert set(statuses) <= {"MISS", "COALESCED", "HIT"}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr:
                process.stderr.close()
