"""The gateway facade: configuration errors, and what `plan` may not do on a hit."""

from __future__ import annotations

import pytest

from tests.voice_samples import master_key, voice_like
from voicecache import bootstrap
from voicecache.cache.policy import Policy
from voicecache.cache.service import Gateway
from voicecache.cache.tiers.memory import MemoryTier
from voicecache.cache.tiers.tiered import TieredCache
from voicecache.errors import ConfigError, NotFound
from voicecache.model import SpeechRequest
from voicecache.settings import Settings
from voicecache.voices.registry import VoiceRegistry


def test_a_default_engine_that_is_not_configured_is_a_config_error() -> None:
    cache = TieredCache([MemoryTier(1_000_000)])
    policy = Policy(default_ttl=60, grace=0)
    with pytest.raises(ConfigError, match="default engine 'nope' is not configured"):
        Gateway(engines={}, default_engine="nope", cache=cache, policy=policy)


async def test_a_hit_on_an_uploaded_voice_never_decrypts_its_sample(settings: Settings) -> None:
    settings = settings.model_copy(update={"master_key": master_key()})
    first = bootstrap.build(settings).gateway
    registry = first.voices
    assert isinstance(registry, VoiceRegistry)
    record = registry.store.create(name="Ada", data=voice_like(), tenant="acme")
    request = SpeechRequest.create(text="Spoken in Ada's voice.", voice=record.id)
    made = await first.speak(request, tenant="acme")
    assert made.status == "MISS"
    await first.aclose()

    # A fresh process (no decrypted sample in memory), and the sample can no longer be read:
    # a hit must not need it.
    samples = list((settings.data_dir / "voices" / record.id).glob("sample.*.enc"))
    assert len(samples) == 1
    samples[0].unlink()
    again = bootstrap.build(settings).gateway
    try:
        plan = await again.plan(request, tenant="acme")
        assert plan.key.digest == made.key
        hit = await again.speak(request, tenant="acme")
        assert hit.status == "HIT" and hit.data == made.data
        # A miss needs the sample, and only then reads it.
        other = SpeechRequest.create(text="A line never spoken before.", voice=record.id)
        with pytest.raises(NotFound, match="sample"):
            await again.speak(other, tenant="acme")
    finally:
        await again.aclose()
