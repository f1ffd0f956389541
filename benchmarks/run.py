"""``make bench``: run every benchmark scenario and write ``benchmarks/REPORT.md``.

One command, one run: every number in the report comes from this run, and the report names
the commit it measured, the machine, the versions and the commands. Progress goes to stderr.

Usage::

    python -m benchmarks.run [--quick] [--only article,herd,...] [--out benchmarks/REPORT.md]

``--quick`` shrinks every scenario to a smoke test (seconds, not minutes; the numbers mean
nothing); the smoke test in ``tests/test_bench_smoke.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import (
    article,
    coldstart,
    density,
    herd,
    hitpath,
    rss,
    segments,
    simulate,
    streaming,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "REPORT.md"
# The full simulator scale takes minutes per policy; this one fits the 15-minute budget.
BENCH_SCALE = simulate.Scale(objects=30_000, requests=300_000, cache_fractions=(0.01, 0.05, 0.20))
SMOKE_SCALE = simulate.Scale(objects=500, requests=5_000, cache_fractions=(0.05,))


def _policy(quick: bool) -> dict[str, Any]:
    scale = SMOKE_SCALE if quick else BENCH_SCALE
    h.log(f"policy: {scale.objects:,} objects, {scale.requests:,} requests per trace")
    rows = simulate.run(quick, jobs=min(2, os.cpu_count() or 1), scale=scale)
    return {"scale": scale.__dict__, "rows": rows}


def _policy_md(result: dict[str, Any]) -> str:
    s = result["scale"]
    return (
        f"The real `voicecache.cache.eviction` policies replayed by `benchmarks/simulate.py`: "
        f"{s['objects']:,} objects (Zipf traces), {s['requests']:,} requests per trace, sizes "
        f"20 KB–1 MB log-uniform, cache = share of the working-set bytes.\n\n"
        + simulate.render_markdown(result["rows"])
    )


# name → (title, run(quick), render(result))
SECTIONS: dict[str, tuple[str, Callable[[bool], dict[str, Any]], Callable[[Any], str]]] = {
    "density": ("5. Storage density and codec cost", density.run, density.render_markdown),
    "policy": ("4. Policy quality", _policy, _policy_md),
    "article": ("1. The article's scenario", article.run, article.render_markdown),
    "herd": ("2. Thundering herd", herd.run, herd.render_markdown),
    "hitpath": ("3. Hit path vs. the physical limit", hitpath.run, hitpath.render_markdown),
    "rss": ("6. Memory under load", rss.run, rss.render_markdown),
    "streaming": ("7. Streaming", streaming.run, streaming.render_markdown),
    "segments": ("8. Segments and templates: savings", segments.run, segments.render_markdown),
    "coldstart": ("9. Cold start at scale", coldstart.run, coldstart.render_markdown),
}
REPORT_ORDER = (
    "article",
    "herd",
    "hitpath",
    "policy",
    "density",
    "rss",
    "streaming",
    "segments",
    "coldstart",
)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def headline(results: dict[str, Any]) -> str:
    """The table the README quotes."""
    rows: list[list[Any]] = []
    a = results.get("article", {})
    if "ratios" in a:
        d, c, r, w = a["direct"], a["voicecache"], a["ratios"], a["workload"]
        rows += [
            [
                f"Engine calls, {w['requests']:,} game/stream requests "
                f"({w['repeat_rate']:.0%} repeats)",
                f"{d['engine_calls']:,} → {c['engine_calls']:,} (−{1 - r['calls']:.0%}); "
                f"minimum possible {w['distinct_keys']:,}",
                "−58 %",
            ],
            [
                'Characters synthesized ("tokens")',
                f"{d['characters']:,} → {c['characters']:,} (×{r['characters']:.2f})",
                "≈ ⅓",
            ],
            [
                "Latency p50, engine directly → voicecache hit",
                f"{d['latency_all']['p50']:.0f} ms → {c['latency_hits']['p50']:.1f} ms "
                f"(p99 {c['latency_hits']['p99']:.1f} ms)",
                "800 ms → < 50 ms",
            ],
        ]
    hd = results.get("herd", {})
    if "engine_calls" in hd:
        rows.append(
            [
                f"Engine calls for {hd['params']['requests']:,} simultaneous requests of one new "
                f"line ({hd['replicas']} replica{'s' if hd['replicas'] > 1 else ''})",
                f"{hd['engine_calls']}",
                "goal: 1",
            ]
        )
    hp = results.get("hitpath", {})
    for row in hitpath.headline(hp):
        if row["endpoint"] == "GET file":
            continue
        rows.append(
            [
                f"Memory hit, ~100 KB, `{row['endpoint']}`, 1 worker, 32 connections",
                f"{row['rps']:,.0f} req/s, p99 {row['p99_ms']:.1f} ms = "
                f"**{row['x_nginx']:.2f}× nginx**",
                "nginx = 1.00",
            ]
        )
    dn = results.get("density", {})
    flac = next((r for r in dn.get("rows", []) if r["codec"] == "flac"), None)
    opus = next((r for r in dn.get("rows", []) if r["codec"] == "opus"), None)
    if flac and opus:
        rows.append(
            [
                "Hours of speech per GB (FLAC default / Opus)",
                f"{flac['hours_per_gb']:.0f} h / {opus['hours_per_gb']:.0f} h",
                "",
            ]
        )
    rs = results.get("rss", {})
    if rs.get("max_rss_after_warm"):
        mib = 1024 * 1024
        rows.append(
            [
                f"RSS under {rs['params']['seconds']:.0f} s mixed load, memory tier "
                f"{rs['params']['memory_bytes'] / mib:.0f} MiB",
                f"idle {rs['idle_rss'] / mib:.0f} → max {rs['max_rss_after_warm'] / mib:.0f} MiB; "
                f"after warm-up {rs['slope_mib_per_min']:+.1f} MiB/min",
                "bounded, flat",
            ]
        )
    st = results.get("streaming", {})
    if "goal" in st:
        g = st["goal"]
        rows.append(
            [
                "First audio byte of a miss, streaming engine (first chunk at "
                f"{st['params']['first_chunk_s'] * 1000:.0f} ms): engine directly → "
                "voicecache streamed",
                f"{g['engine_first_ms']:.0f} ms → {g['streamed_first_ms']:.0f} ms "
                f"({g['overhead_ms']:+.0f} ms); whole miss "
                f"{st['openai']['whole miss']['first_ms']['p50']:.0f} ms",
                f"goal: within {g['goal_ms']:.0f} ms",
            ]
        )
    sg = results.get("segments", {})
    if "sides" in sg:
        w, on, ttfb = sg["workload"], sg["sides"]["on"], sg["ttfb"]["rows"]
        rows.append(
            [
                f"Characters sent to the engine, {w['requests']:,} requests with long texts and "
                "template lines: segments off → on",
                f"{sg['sides']['off']['characters']:,} → {on['characters']:,} = "
                f"**{sg['ratio_on_to_exact_minimum']:.2f}× the exact-match minimum** "
                f"({w['exact']:,})",
                "goal: ≤ 0.6×",
            ]
        )
        rows.append(
            [
                "First byte of a new six-sentence text, EmotiVoice: whole → segmented + streamed",
                f"{ttfb['whole']['first_ms']:.0f} ms → {ttfb['segments, streamed']['first_ms']:.0f}"
                " ms",
                "its first sentence",
            ]
        )
    return h.table(["", "measured", "article / goal"], rows)


def render(results: dict[str, Any], meta: dict[str, Any], plots: dict[str, str]) -> str:
    m, v, c = meta["machine"], meta["versions"], meta["commit"]
    out = [
        "# voicecache benchmarks\n",
        f"Written by `{meta['command']}` on {meta['started']} in {meta['seconds'] / 60:.1f} "
        f"minutes{' (QUICK smoke run: numbers mean nothing)' if meta['quick'] else ''}. "
        f"Commit measured: `{c['sha']}` ({c['subject']}); uncommitted changes to the code "
        f"measured or measuring (src/, benchmarks/*.py, tests/fakes/): {c['code_dirty']}. "
        "Every number below comes from that one run; raw numbers are in "
        f"`{meta['json_name']}` beside this file.\n",
        "Machines here are shared and noisy: read the ratios (measured side by side, in "
        "alternating rounds) rather than the absolute numbers.\n",
        "## Headline\n",
        headline(results),
    ]
    for name in REPORT_ORDER:
        if name not in results:
            continue
        title = SECTIONS[name][0]
        out.append(f"## {title}\n")
        out.append(SECTIONS[name][2](results[name]))
        if name in plots:
            out.append(f"![{title}](plots/{plots[name]})\n")
        timing = meta["sections"][name]
        out.append(
            f"_Section time {timing['seconds']:.0f} s; load average before/after: "
            f"{timing['load_before']} / {timing['load_after']}._\n"
        )
    out.append("## Machine, versions, commands\n")
    out.append(h.table(["", ""], [[k, val] for k, val in m.items()]))
    out.append(h.table(["software", "version"], [[k, val] for k, val in v.items()]))
    out.append(
        "Commands: `make bench` (= `make bench-deps` to install Debian `nginx-light` and `wrk`, "
        "then `python -m benchmarks.run`). Each scenario also runs alone: "
        "`python -m benchmarks.article|herd|hitpath|density|rss|streaming|segments|coldstart "
        "[--quick]`, "
        "`python benchmarks/simulate.py`. Servers are started by the scripts: "
        "`python -m voicecache serve --port P --workers W` configured by `VOICECACHE_*` "
        "variables (tiers, engine), `python -m tests.fakes.emotivoice --port P --latency S`, "
        "`nginx -c <generated conf>`, `redis-server` (persistence off), "
        "`wrk -t1 -cC -dDs --latency [-s post.lua] URL`, "
        "`py-spy record --pid PID --format raw`.\n"
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    started = time.time()
    meta: dict[str, Any] = {
        "command": "python -m benchmarks.run"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else ""),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "quick": args.quick,
        "machine": h.machine(),
        "versions": h.versions(),
        "commit": h.commit(),
        "sections": {},
        "json_name": args.out.with_suffix(".json").name,
    }
    h.log(f"bench: commit {meta['commit']['sha'][:12]}, sections {', '.join(chosen)}")
    results: dict[str, Any] = {}
    for name in SECTIONS:
        if name not in chosen:
            continue
        before = _loadavg()
        began = time.monotonic()
        h.log(f"== {SECTIONS[name][0]}")
        results[name] = SECTIONS[name][1](args.quick)
        meta["sections"][name] = {
            "seconds": time.monotonic() - began,
            "load_before": before,
            "load_after": _loadavg(),
        }
    meta["seconds"] = time.time() - started
    plots: dict[str, str] = {}
    if not args.no_plots:
        try:
            from benchmarks.plots import draw

            plots = draw(results, args.out.parent / "plots")
        except ImportError:
            h.log("plots: matplotlib not installed, skipped")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, meta, plots), encoding="utf-8")
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results}, default=str), encoding="utf-8"
    )
    h.log(f"bench: wrote {args.out} in {meta['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
