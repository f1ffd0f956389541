"""Smoke test of `make bench`: every scenario runs in its tiny `--quick` mode and writes a
report whose numbers obey the invariants that hold at any size.

Nothing here is a performance assertion: the quick run's numbers mean nothing. The hit-path
scenario needs Debian's nginx and wrk (`make bench-deps`); on a machine without them it must
say so in the report instead of failing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from benchmarks import hitpath, run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench") / "REPORT.md"
    assert run.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    return out.read_text(), data, out.parent


def test_report_names_commit_machine_and_every_section(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    report, data, _ = quick_run
    sha = data["meta"]["commit"]["sha"]
    assert len(sha) == 40 and sha in report
    assert "## Headline" in report
    for title, _, _ in run.SECTIONS.values():
        assert f"## {title}" in report
    assert data["meta"]["machine"]["cores"] in report
    assert set(data["results"]) == set(run.SECTIONS)


def test_article_cache_calls_the_engine_once_per_distinct_key(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    result = quick_run[1]["results"]["article"]
    workload, direct, cached = result["workload"], result["direct"], result["voicecache"]
    assert direct["errors"] == 0 and cached["errors"] == 0
    assert direct["engine_calls"] == workload["requests"]
    assert direct["characters"] == workload["characters"]
    # Coalescing + cache: exactly the minimum, and the characters of the distinct keys only.
    assert cached["engine_calls"] == workload["distinct_keys"]
    assert cached["characters"] == workload["distinct_characters"]
    assert cached["by_status"].get("HIT", 0) > 0


def test_herd_is_coalesced(quick_run: tuple[str, dict[str, Any], Path]) -> None:
    result = quick_run[1]["results"]["herd"]
    # Exactly one engine call across all replicas: in-process coalescing plus the
    # cross-replica fill lock (one leader; the other replica serves what it stored).
    assert result["engine_calls"] == 1, result
    assert result["errors"] == 0, result
    assert result["by_cache"]["MISS"] == 1, result
    assert sum(result["by_cache"].values()) == result["params"]["requests"]


def test_hit_path_measures_or_says_what_is_missing(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    report, data, _ = quick_run
    result = data["results"]["hitpath"]
    if shutil.which("nginx") is None or shutil.which("wrk") is None:
        assert "not installed" in result["skipped"]
        assert "not installed" in report
        return
    rows = result["summary"]
    assert {r["endpoint"] for r in rows} >= {"GET file", "POST /tts"}
    for row in rows:
        assert row["valid"], row  # no non-2xx answers counted as throughput
        assert row["rps"] > 0
    for check in result["checks"].values():
        assert check["nginx_same_bytes"] and check["clip_bytes"] > 50_000
    # The quick run measures the memory tier at 32 connections: its goals are judged.
    judged = {g["label"]: g for g in hitpath.goals(result)}
    assert {"memory, POST", "memory, 32 connections, POST"} <= set(judged)
    assert "× nginx" in report and ("met" in report)


def test_policy_density_and_rss_numbers_are_sane(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    results = quick_run[1]["results"]
    policies = {r["policy"] for r in results["policy"]["rows"]}
    assert {"LRU", "W-TinyLFU"} <= policies
    for row in results["policy"]["rows"]:
        assert 0 <= row["byte_hit_ratio"] <= 1 and 0 <= row["object_hit_ratio"] <= 1
    codecs = {r["codec"]: r for r in results["density"]["rows"]}
    assert set(codecs) == {"wav", "flac", "opus", "mp3"}
    assert codecs["flac"]["bytes_per_audio_second"] < codecs["wav"]["bytes_per_audio_second"]
    assert codecs["opus"]["bytes_per_audio_second"] < codecs["flac"]["bytes_per_audio_second"]
    rss = results["rss"]
    assert rss["requests"] > 0 and rss["samples"]
    assert rss["max_rss_after_warm"] >= rss["idle_rss"] > 0


def test_streaming_shares_one_engine_call_per_line(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    result = quick_run[1]["results"]["streaming"]
    calls = result["stand_in_calls"]
    assert calls["measured"] == calls["expected"], calls  # the coalesced pair: one call
    paths = result["openai"]
    assert paths["streamed miss"]["x_cache"] == ["MISS"]
    assert paths["coalesced streamed waiter"]["x_cache"] == ["COALESCED"]
    assert paths["streamed hit (memory)"]["x_cache"] == ["HIT"]
    assert result["espeak"]["streamed miss"]["x_cache"] == ["MISS"]


def test_plots_are_written(quick_run: tuple[str, dict[str, Any], Path]) -> None:
    report, _, directory = quick_run
    pngs = sorted(p.name for p in (directory / "plots").glob("*.png"))
    assert {"article_latency.png", "policy_hit_ratio.png", "rss.png"} <= set(pngs)
    for name in pngs:
        assert f"plots/{name}" in report
        assert (directory / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_segments_pay_exactly_the_distinct_segments(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    result = quick_run[1]["results"]["segments"]
    workload, off, on = result["workload"], result["sides"]["off"], result["sides"]["on"]
    assert off["errors"] == 0 and on["errors"] == 0
    # Exact caching pays the exact-match minimum; segments pay each distinct segment once.
    assert off["characters"] == workload["exact"]
    assert on["characters"] == workload["segments"] < workload["exact"]
    rows = result["ttfb"]["rows"]
    assert list(rows) == ["whole", "whole, streamed", "segments", "segments, streamed"]
    assert all(row["x_cache"] == "MISS" and row["first_ms"] > 0 for row in rows.values())


def test_cold_start_restarts_a_gateway_onto_a_filled_directory(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    result = quick_run[1]["results"]["coldstart"]
    (row,) = result["rows"]
    assert row["entries"] == result["sizes"][0]
    # One voice of 100 purged through the index; nothing due for the sweep.
    assert row["purged"] == row["entries"] // 100 and row["swept"] == 0
    assert row["left"] == row["entries"] - row["purged"]
    assert row["index_bytes"] > 0 and row["gateway_rss_kib"] > row["rss_kib"] > 0
