"""The lookup by key (`Gateway.fetch`): tenants are checked before any work, and a hit is
counted exactly when stored audio is served."""

from __future__ import annotations

from dataclasses import replace

import pytest

from voicecache import bootstrap
from voicecache.cache.service import Gateway
from voicecache.errors import NotFound
from voicecache.model import Entry, SpeechRequest
from voicecache.settings import Settings

PRIVATE = "f" * 64  # the key of an entry made with a private voice of tenant "acme"


@pytest.fixture
async def gateway(settings: Settings) -> Gateway:
    # Popularity on, so the policy counts every hit (and never reaches the threshold here).
    counting = settings.model_copy(
        update={"default_ttl": 100.0, "popularity_hits": 10, "popularity_factor": 2.0}
    )
    made = bootstrap.build(counting).gateway
    yield made  # type: ignore[misc]
    await made.aclose()


async def store_private(gateway: Gateway) -> None:
    """A canonical entry that belongs to tenant "acme" (as a private voice's audio does)."""
    request = SpeechRequest.create(text="Only for acme.", voice="en", format="flac")
    made = await gateway.speak(request)
    meta = replace(made.meta, key=PRIVATE, tenant="acme")
    await gateway.cache.set(f"{PRIVATE}.flac", Entry(made.data, meta))


async def test_fetch_counts_a_served_hit(gateway: Gateway) -> None:
    made = await gateway.speak(SpeechRequest.create(text="Count me.", voice="en"))
    entry_id = f"{made.key}.wav"
    assert gateway.policy.hit_count(entry_id) == 0
    for served in (1, 2):
        assert (await gateway.fetch(made.key, "wav")).data == made.data
        assert gateway.policy.hit_count(entry_id) == served


async def test_fetch_for_another_tenant_neither_transcodes_nor_counts(gateway: Gateway) -> None:
    await store_private(gateway)
    with pytest.raises(NotFound):
        await gateway.fetch(PRIVATE, "mp3", tenant="globex")
    # Nothing was transcoded or stored for a request that was refused.
    assert await gateway.cache.get(f"{PRIVATE}.mp3") is None
    with pytest.raises(NotFound):
        await gateway.fetch(PRIVATE, "flac", tenant="globex")
    with pytest.raises(NotFound):
        await gateway.fetch(PRIVATE, "flac")  # no tenant at all
    assert gateway.policy.hit_count(f"{PRIVATE}.flac") == 0
    # The owner gets it, counted; a new format is transcoded for the owner only.
    assert (await gateway.fetch(PRIVATE, "flac", tenant="acme")).meta.tenant == "acme"
    assert gateway.policy.hit_count(f"{PRIVATE}.flac") == 1
    mp3 = await gateway.fetch(PRIVATE, "mp3", tenant="acme")
    assert mp3.format == "mp3" and mp3.status == "HIT"
    assert await gateway.cache.get(f"{PRIVATE}.mp3") is not None
