"""`voicecache serve --workers 2`, a real server process: `/metrics` and `/dashboard/data`
count the requests of every worker, whichever worker answers the scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.test_dashboard import _Values, chromium
from tests.servers import free_port

LINES = 10
REQUESTS = 40
BAD = 3


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    stale = data / "metrics" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from a previous server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "voicecache", "serve", "--workers", "2", "--port", str(port)],
        env={
            **os.environ,
            "VOICECACHE_DATA_DIR": str(data),
            "VOICECACHE_ACCESS_LOG": "false",
            "VOICECACHE_LOG_LEVEL": "warning",
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if fresh(url).get("/dashboard/data").json()["workers"] == 2:
                    break  # both workers publish their state
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the two workers did not come up"
            time.sleep(0.2)
        assert not stale.exists()  # the parent emptied the directory before workers started
        yield url, data
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()[-3000:]
    # Workers that stopped cleanly took their live gauges with them.
    assert not list((data / "metrics").glob("gauge_liveall_*.db"))


def fresh(url: str) -> httpx.Client:
    """A client whose every request opens a new connection, so the kernel hands requests
    to either worker (a kept-alive connection would stay with one)."""
    return httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


@pytest.mark.slow
@pytest.mark.browser
def test_metrics_and_dashboard_totals_are_the_sum_over_workers(
    two_workers: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = two_workers
    with fresh(url) as client:
        for n in range(REQUESTS):
            line = {"text": f"Worker line {n % LINES}.", "voice": "en"}
            assert client.post("/tts", json=line).status_code == 200
        for _ in range(BAD):
            assert client.post("/tts", json={"text": "hi", "voice": "nobody"}).status_code == 422
        assert client.post("/tts", json={"text": "", "voice": "en"}).status_code == 422

        answered_by: dict[int, int] = {}  # pid -> requests that worker served itself
        for scrape in range(4):
            exposition = client.get("/metrics").text

            def total(name: str, text: str = exposition, **match: str) -> float:
                return sum(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == name
                    and all(sample.labels.get(k) == v for k, v in match.items())
                )

            assert total("voicecache_requests_total") == REQUESTS + BAD, scrape
            assert total("voicecache_requests_total", result="miss") >= LINES
            assert total("voicecache_request_seconds_count") == REQUESTS + BAD
            assert total("voicecache_errors_total", type="UnknownVoice") == BAD
            assert total("voicecache_errors_total", type="InvalidRequest") == 1
            # Each line was synthesized by whichever worker missed it first (memory is per
            # worker, the disk is shared): at most one engine call per line per worker.
            calls = total("voicecache_engine_calls_total")
            assert LINES <= calls <= 2 * LINES
            # Breaker-less espeak: no circuit; the memory tier's size is the sum over workers.
            assert total("voicecache_tier_entries", tier="disk") >= 2 * LINES

            data = client.get("/dashboard/data").json()
            assert data["workers"] == 2
            totals = data["totals"]
            assert sum(totals["requests"].values()) == REQUESTS + BAD
            assert totals["errors"] == {"UnknownVoice": BAD, "InvalidRequest": 1}
            assert sum(totals["engine_calls"]["espeak"].values()) == calls
            answered_by[data["pid"]] = served_by_this_worker(data)
        # Keep asking until both workers have answered a scrape (the kernel picks, bounded).
        for _ in range(60):
            if len(answered_by) == 2:
                break
            data = client.get("/dashboard/data").json()
            answered_by[data["pid"]] = served_by_this_worker(data)
    # Each worker's own charts count only what it served; the totals count both.
    assert len(answered_by) == 2, answered_by
    assert sum(answered_by.values()) == REQUESTS
    # The page says so.
    dumped = chromium("--dump-dom", f"{url}/dashboard?refresh=60", profile=tmp_path / "p")
    page = _Values()
    page.feed(dumped.stdout)
    assert page.values["workers"][0] == "2"
    assert float(page.values["requests"][0]) == REQUESTS + BAD
    assert "Totals: the sum over" in dumped.stdout


def served_by_this_worker(data: dict[str, Any]) -> int:
    results = ("hit", "miss", "coalesced", "stale")
    return sum(bucket[r] for bucket in data["insights"]["history"] for r in results)
