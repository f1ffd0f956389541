"""`/healthz` and `/readyz` over real HTTP, with a real Redis killed and a fake engine stopped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveApp
from tests.fakes import emotivoice
from tests.fixtures_servers import FakeEngineServer
from tests.servers import RedisServer
from voicecache.settings import Settings


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis this test may kill."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_engine() -> Iterator[FakeEngineServer]:
    """A fake EmotiVoice this test may stop."""
    with FakeEngineServer(emotivoice.create_app()) as server:
        yield server


def line(n: int) -> dict[str, str]:
    return {"text": f"Health check line {n}.", "voice": "8051"}


@pytest.mark.redis
def test_healthz_names_the_failing_tier_and_engine_and_stays_200(
    serve: Callable[..., LiveApp],
    tmp_path: Path,
    own_redis: RedisServer,
    own_engine: FakeEngineServer,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        tiers=["memory", "redis"],
        redis_url=own_redis.url,
        redis_breaker_cooldown=60,
        engine="emotivoice",
        emotivoice_url=own_engine.url,
        engine_retries=1,
        breaker_failures=1,
        breaker_cooldown=60,
    )
    live = serve(settings)
    assert live.client.post("/tts", json=line(0)).status_code == 200
    healthy = live.client.get("/healthz").json()
    assert healthy["status"] == "ok" and healthy["failing"] == []
    assert healthy["tiers"] == {"memory": {"state": "ok"}, "redis": {"state": "closed"}}

    own_redis.kill()
    for n in range(1, 4):  # each miss reads and writes Redis: 3 failures open its circuit
        assert live.client.post("/tts", json=line(n)).status_code == 200
    answer = live.client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "degraded"
    assert answer.json()["failing"] == [{"kind": "tier", "name": "redis", "state": "open"}]

    own_engine.stop()
    assert live.client.post("/tts", json=line(9)).status_code == 503
    answer = live.client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["failing"] == [
        {"kind": "tier", "name": "redis", "state": "open"},
        {"kind": "engine", "name": "emotivoice", "state": "open"},
    ]
    assert answer.json()["engines"]["emotivoice"]["state"] == "open"
    # The memory tier still serves what it holds: ready, and the cached line is a hit.
    assert live.client.get("/readyz").status_code == 200
    assert live.client.post("/tts", json=line(0)).headers["x-cache"] == "HIT"


@pytest.mark.redis
def test_readyz_fails_only_while_no_tier_can_serve_and_no_engine_answers(
    serve: Callable[..., LiveApp],
    tmp_path: Path,
    own_redis: RedisServer,
    own_engine: FakeEngineServer,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        tiers=["redis"],  # nothing local: readiness rests on Redis and the engine
        redis_url=own_redis.url,
        redis_breaker_cooldown=0.2,
        engine="emotivoice",
        emotivoice_url=own_engine.url,
    )
    live = serve(settings)
    ready = live.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "tiers": {"redis": True}, "engines": {}}

    own_redis.kill()  # no request has failed yet: the probe itself finds Redis gone
    answer = live.client.get("/readyz")
    assert answer.status_code == 200  # the engine still answers
    assert answer.json()["tiers"] == {"redis": False}
    assert answer.json()["engines"] == {"emotivoice": True}

    own_engine.stop()
    answer = live.client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {
        "ready": False,
        "tiers": {"redis": False},
        "engines": {"emotivoice": False},
    }
    assert live.client.get("/healthz").status_code == 200  # alive all the same

    own_engine.start()
    assert live.client.get("/readyz").status_code == 200
    own_engine.stop()
    own_redis.start()
    # The failed PINGs opened Redis's circuit; after its cooldown the next probe closes it.
    deadline = time.monotonic() + 10
    while (answer := live.client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, answer.json()
        time.sleep(0.05)
    assert answer.json() == {"ready": True, "tiers": {"redis": True}, "engines": {}}
    assert live.client.get("/healthz").json()["tiers"] == {"redis": {"state": "closed"}}


def test_readyz_and_healthz_need_no_key(serve: Callable[..., LiveApp], settings: Settings) -> None:
    from voicecache.security.auth import KeyStore

    KeyStore(settings.keys_path).add("acme", ["speak"])
    live = serve(settings)
    assert live.client.get("/readyz").json() == {
        "ready": True,
        "tiers": {"memory": True, "disk": True},
        "engines": {},
    }
    assert live.client.get("/healthz").json()["status"] == "ok"
    assert live.client.get("/v1/models").status_code == 401
