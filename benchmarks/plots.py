"""PNG plots for the report (matplotlib, headless). Each plot is drawn only from the results
of the run that writes the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], directory: Path) -> dict[str, str]:
    """Write the plots the results allow; returns {name: file name}. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    article = results.get("article", {})
    if "direct" in article:
        fig, ax = plt.subplots(figsize=(7, 4))
        direct = sorted(v for v, _ in article["direct"]["samples_ms"])
        cached = article["voicecache"]["samples_ms"]
        series = [
            ("clients → engine", direct),
            ("clients → voicecache, all", sorted(v for v, _ in cached)),
            ("voicecache hits", sorted(v for v, c in cached if c == "HIT")),
        ]
        for label, values in series:
            if values:
                ax.plot(values, [i / len(values) for i in range(1, len(values) + 1)], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("share of requests")
        ax.set_title("Article scenario: latency CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        written["article"] = _save(fig, directory / "article_latency.png")

    hitpath = results.get("hitpath", {})
    rows = [r for r in hitpath.get("summary", []) if r["endpoint"] != "GET file"]
    if rows:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        groups = sorted({(r["workers"], r["connections"]) for r in rows})
        series = sorted({(r["tier"], r["endpoint"]) for r in rows})
        width = 0.8 / len(series)
        for i, (tier, endpoint) in enumerate(series):
            values = [
                next(
                    (
                        r["x_nginx"]
                        for r in rows
                        if (r["workers"], r["connections"]) == group
                        and (r["tier"], r["endpoint"]) == (tier, endpoint)
                    ),
                    0.0,
                )
                for group in groups
            ]
            ax.bar(
                [x + i * width for x in range(len(groups))],
                values,
                width,
                label=f"{tier}: {endpoint.split(' /')[0]} {endpoint.split(' ', 1)[1]}",
            )
        ax.axhline(1.0, color="tab:red", linestyle="--", label="nginx static file")
        ax.set_xticks(
            [x + width * (len(series) - 1) / 2 for x in range(len(groups))],
            [f"{w} worker(s)\n{c} connection(s)" for w, c in groups],
        )
        ax.set_ylabel("req/s ÷ nginx req/s (same round)")
        ax.set_title("Cache hits of a ~100 KB clip vs nginx serving the same bytes")
        ax.legend(fontsize=7, ncol=2)
        written["hitpath"] = _save(fig, directory / "hitpath_vs_nginx.png")

    rss = results.get("rss", {})
    if rss.get("samples"):
        fig, ax = plt.subplots(figsize=(7, 4))
        mib = 1024 * 1024
        ax.plot([t for t, _ in rss["samples"]], [r / mib for _, r in rss["samples"]], label="RSS")
        budget = rss["params"]["memory_bytes"] / mib
        ax.axhline(
            rss["idle_rss"] / mib + budget,
            color="tab:red",
            linestyle="--",
            label=f"idle RSS + memory-tier budget ({budget:.0f} MiB)",
        )
        ax.axvline(
            rss["params"]["seconds"] / 3, color="gray", linestyle=":", label="end of warm-up"
        )
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB")
        ax.set_title("Gateway RSS under mixed load")
        ax.legend()
        written["rss"] = _save(fig, directory / "rss.png")

    policy = results.get("policy", {}).get("rows", [])
    if policy:
        fig, ax = plt.subplots(figsize=(9, 4))
        at = [r for r in policy if abs(r["cache_fraction"] - 0.05) < 1e-9]
        traces = list(dict.fromkeys(r["trace"] for r in at))
        policies = list(dict.fromkeys(r["policy"] for r in at))
        width = 0.8 / max(1, len(policies))
        for i, name in enumerate(policies):
            values = [
                100
                * next(
                    (r["object_hit_ratio"] for r in at if r["trace"] == t and r["policy"] == name),
                    0,
                )
                for t in traces
            ]
            ax.bar([x + i * width for x in range(len(traces))], values, width, label=name)
        ax.set_xticks(
            [x + width * (len(policies) - 1) / 2 for x in range(len(traces))], traces, fontsize=8
        )
        ax.set_ylabel("object hit ratio, %")
        ax.set_title("Eviction policies, cache = 5 % of working-set bytes")
        ax.legend(fontsize=8)
        written["policy"] = _save(fig, directory / "policy_hit_ratio.png")
    return written


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name
