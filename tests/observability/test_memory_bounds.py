"""Every per-process structure that grows with distinct keys, clients or headers is bounded by
entries and by bytes (issue #12, "memory stays bounded"): each is grown past its limits here.
The fast-lane memo and the auth cache have their own tests (tests/http/test_fastlane_parity.py,
tests/security/test_auth_rules.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import LiveApp
from voicecache.cache.policy import Policy
from voicecache.model import EntryMeta, SpeechResult, Status
from voicecache.observability import metrics as metrics_module
from voicecache.observability.insights import RESULTS, Insights
from voicecache.observability.metrics import Metrics
from voicecache.security.ratelimit import LocalCounters
from voicecache.settings import Settings


def result(key: str, text: str, status: Status = "MISS") -> SpeechResult:
    meta = EntryMeta(
        key=key, format="wav", sample_rate=22050, duration=1.0, size=100, checksum="",
        created=0.0, expires_at=100.0, stale_until=100.0, engine="espeak", voice="en",
        text=text, ttl=100.0,
    )  # fmt: skip
    return SpeechResult(b"x" * 100, "wav", key, status, None, meta)


def test_insights_lines_are_bounded_by_count() -> None:
    insights = Insights(max_lines=100)
    for i in range(1_000):
        insights.record(result(f"{i:064x}", f"line {i}"), 0.001)
    assert insights.snapshot()["tracked_lines"] == 100


def test_insights_lines_are_bounded_by_bytes() -> None:
    insights = Insights(max_lines=10_000, max_bytes=200_000)
    long_text = "a long line, " * 300  # ~4,000 characters, as long as a request may be
    for i in range(1_000):
        insights.record(result(f"{i:064x}", f"{long_text}{i}"), 0.001)
    assert insights.tracked_bytes <= 200_000
    assert 10 <= insights.snapshot()["tracked_lines"] <= 200_000 // 4_000


def test_rate_limit_buckets_are_bounded() -> None:
    now = [0.0]
    counters = LocalCounters(lambda: now[0], max_buckets=500, max_bytes=40_000)
    for i in range(5_000):  # one request from each of 5,000 addresses, within one window
        assert counters.take(f"rps:anon:10.0.{i // 256}.{i % 256}", 1, 5, 60.0) is None
    assert counters.buckets <= 500 and counters.bytes <= 40_000
    # The newest counters are the ones kept: a client that keeps asking is still limited.
    for _ in range(4):
        counters.take("rps:anon:10.0.19.135", 1, 5, 60.0)
    assert counters.take("rps:anon:10.0.19.135", 1, 5, 60.0) is not None


def test_popularity_counters_are_bounded() -> None:
    policy = Policy(
        default_ttl=100, grace=0, popularity_hits=5, popularity_factor=2.0,
        max_tracked=300, max_tracked_bytes=30_000,
    )  # fmt: skip
    meta = result("k", "t").meta
    for i in range(3_000):
        policy.hit(f"{i:064x}.wav", meta)
    entries, size = policy.tracked
    assert entries <= 300 and size <= 30_000


def test_metric_label_sets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_LABEL_SETS", 50)
    metrics = Metrics(price_per_million_chars=15)
    for i in range(1_000):
        metrics.request_failed(ValueError("x"), f"engine-{i}", 0.01)
        metrics.engine_call(f"engine-{i}", "ok", 0.01, 10)
        metrics.request_done(result(f"{i:064x}", "t", "HIT"), f"engine-{i}", 0.001)
    # Past the bound, one `other` label set per status (requests) or outcome (engine calls).
    assert len(metrics.requests) <= 50 + len(RESULTS) and len(metrics.engine_calls) <= 51
    assert len(metrics.engine_seconds) <= 51
    assert sum(metrics.requests.values()) == 2_000  # nothing is lost, only folded
    assert metrics.requests[("error", "none", "other")] > 900


def test_unknown_engines_sent_by_clients_do_not_grow_metrics(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    for i in range(300):
        response = live.client.post("/tts", json={"text": "hi", "voice": "en", "engine": f"e{i}"})
        assert response.status_code == 422
    assert live.client.post("/tts", json={"text": "hi", "engine": "x" * 65}).status_code == 422
    metrics: Metrics = live.gateway.observer  # type: ignore[assignment]
    assert len(metrics.requests) <= metrics_module.MAX_LABEL_SETS + len(RESULTS)
    assert all(len(labels[2]) <= 64 for labels in metrics.requests)
