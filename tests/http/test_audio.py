"""`GET /v1/audio/{key}.{format}` over real HTTP, on the fast lane and the slow path alike:
one rule for hits, which count (for sliding and popular lifetimes) only when served."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import LiveApp
from tests.voice_samples import master_key, voice_like
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings


@pytest.fixture
def counting(settings: Settings) -> Settings:
    # Popularity on, so the policy counts every hit (and never reaches the threshold here).
    return settings.model_copy(
        update={
            "master_key": master_key(),
            "default_ttl": 100.0,
            "popularity_hits": 10,
            "popularity_factor": 2.0,
        }
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_hits_are_counted_on_both_paths(serve: Callable[..., LiveApp], counting: Settings) -> None:
    live = serve(counting)
    made = live.client.post("/tts", json={"text": "Count every listen.", "voice": "en"})
    entry_id = f"{made.headers['x-cache-key']}.wav"
    policy = live.gateway.policy
    fast = live.client.get(f"/v1/audio/{entry_id}")
    assert fast.status_code == 200 and fast.content == made.content
    assert policy.hit_count(entry_id) == 1
    # A conditional request takes the slow path (`Gateway.fetch`): served, so counted too.
    slow = live.client.get(f"/v1/audio/{entry_id}", headers={"If-None-Match": '"other"'})
    assert slow.status_code == 200 and slow.content == made.content
    assert policy.hit_count(entry_id) == 2


def test_a_refused_tenant_counts_no_hit(serve: Callable[..., LiveApp], counting: Settings) -> None:
    store = KeyStore(counting.keys_path)
    acme = store.add("acme", ["speak", "voices"])[0]
    globex = store.add("globex", ["speak", "voices"])[0]
    live = serve(counting)
    uploaded = live.client.post(
        "/v1/voices",
        headers=bearer(acme),
        data={"name": "Sam"},
        files={"file": ("s.wav", voice_like())},
    )
    assert uploaded.status_code == 201, uploaded.text
    line = {"text": "Private words.", "voice": uploaded.json()["id"]}
    made = live.client.post("/tts", json=line, headers=bearer(acme))
    assert made.status_code == 200 and made.headers["x-cache"] == "MISS"
    entry_id = f"{made.headers['x-cache-key']}.wav"
    policy = live.gateway.policy
    # The audio is in the memory tier, where the fast lane looks first.
    assert live.gateway.cache.peek_memory(entry_id) is not None
    for _ in range(2):
        refused = live.client.get(f"/v1/audio/{entry_id}", headers=bearer(globex))
        assert refused.status_code == 404
    assert policy.hit_count(entry_id) == 0
    served = live.client.get(f"/v1/audio/{entry_id}", headers=bearer(acme))
    assert served.status_code == 200 and served.content == made.content
    assert policy.hit_count(entry_id) == 1
