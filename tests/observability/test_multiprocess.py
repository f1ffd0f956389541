"""`MultiprocessMetrics` across real processes sharing one directory (prometheus-client picks
its file-backed values at import, so each process here is a fresh interpreter started with
`PROMETHEUS_MULTIPROC_DIR` set, as `voicecache serve` starts its workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voicecache.errors import ConfigError
from voicecache.observability.multiprocess import MultiprocessMetrics

# Run in each child: count `hits` hits and `failures` failures for made-up engines, publish
# the state, and print what this process then reads back for all of them.
CHILD = """
import asyncio, json, sys, time
from pathlib import Path
from voicecache.model import EntryMeta, SpeechResult
from voicecache.observability import metrics as metrics_module
from voicecache.observability.multiprocess import MultiprocessMetrics

hits, failures, engines = (int(arg) for arg in sys.argv[1:4])
metrics_module.MAX_LABEL_SETS = 20
metrics = MultiprocessMetrics(Path(sys.argv[4]), price_per_million_chars=10.0)
meta = EntryMeta(key="a" * 64, format="wav", sample_rate=22050, duration=1.0, size=5,
                 checksum="c", created=0.0, expires_at=None, stale_until=None, text="hello")
hit = SpeechResult(b"audio", "wav", "a" * 64, "HIT", "memory", meta)
started = time.process_time()
for _ in range(hits):
    metrics.request_done(hit, "espeak", 0.001)
per_hit = (time.process_time() - started) / max(1, hits)
for i in range(failures):
    metrics.request_failed(ValueError("x"), f"client-engine-{i % engines}", 0.01)
    metrics.error_answered("UnknownVoice")
totals = metrics.totals()
print(json.dumps({"totals": totals, "per_hit": per_hit,
                  "labels": len(metrics._request_counts), "workers": metrics.workers}))
"""


def child(directory: Path, hits: int, failures: int = 0, engines: int = 1) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(hits), str(failures), str(engines), str(directory)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_counts_of_every_process_add_up_and_labels_stay_bounded(tmp_path: Path) -> None:
    first = child(tmp_path, hits=300, failures=5)
    assert first["totals"]["requests"] == {"hit": 300, "error": 5}
    # A hit costs a few file writes; generous bound for a shared 2-core machine.
    assert first["per_hit"] < 50e-6, first["per_hit"]
    second = child(tmp_path, hits=200, failures=100, engines=100)
    totals = second["totals"]
    assert totals["requests"] == {"hit": 500, "error": 105}  # both processes, one read
    assert totals["errors"] == {"UnknownVoice": 105}
    assert totals["characters"]["cache"] == 500 * len("hello")
    assert totals["cost_saved"] == pytest.approx(500 * len("hello") * 10.0 / 1e6)
    # 100 client-sent engine names, bounded at 20 label sets (the rest under "other").
    assert second["labels"] <= 21


def test_without_the_environment_variable_it_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        MultiprocessMetrics(tmp_path, price_per_million_chars=15.0)


SEGMENTS_CHILD = """
import json, sys
from pathlib import Path
from voicecache.model import EntryMeta, SpeechResult
from voicecache.observability.multiprocess import MultiprocessMetrics

metrics = MultiprocessMetrics(Path(sys.argv[1]), price_per_million_chars=10.0)
meta = EntryMeta(key="b" * 64, format="wav", sample_rate=22050, duration=1.0, size=5,
                 checksum="c", created=0.0, expires_at=None, stale_until=None,
                 text="Hello there. Welcome back.")
metrics.segment_done("HIT", 12)
metrics.segment_done("MISS", 13)
metrics.request_done(SpeechResult(b"a", "wav", "b" * 64, "PARTIAL", None, meta, segments=(1, 2)),
                     "espeak", 0.01)
lines = metrics.exposition().decode().splitlines()
counted = [line for line in lines if line.startswith("voicecache_segments_total")]
print(json.dumps({"totals": metrics.totals(), "lines": counted}))
"""


def test_segments_are_counted_across_processes(tmp_path: Path) -> None:
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", SEGMENTS_CHILD, str(tmp_path)],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert sorted(result["lines"]) == [
        'voicecache_segments_total{result="hit"} 2.0',
        'voicecache_segments_total{result="miss"} 2.0',
    ]
    # Per segment: the hit segments' characters, never the segmented text's as a whole.
    assert result["totals"]["characters"]["cache"] == 2 * 12
    assert result["totals"]["requests"] == {"partial": 2}
