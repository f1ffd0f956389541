"""Operator commands: `voicecache warm`, `voicecache stats` (`inspect` is in `inspection.py`).

Exit codes: 0 when everything worked; 1 when an operation failed (rows that could not be
warmed, an unreachable server, a key with nothing stored); 2 for bad usage (unreadable or
malformed script file, bad settings).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from voicecache.cli.common import ConfigOption, command, fail, load_settings, run
from voicecache.codecs import FORMATS
from voicecache.settings import Settings

if TYPE_CHECKING:  # imported where used: every `voicecache` command imports this module
    import httpx

    from voicecache.warmup.runner import LineDefaults, LineResult, Target, WarmReport
    from voicecache.warmup.script import Script

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="A running server (http://host:port) instead of the local store"),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="VOICECACHE_API_KEY", help="API key for --url"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON")]

out = Console()
err = Console(stderr=True)


def money(amount: float) -> str:
    """Dollars with the precision small amounts need ($0.000120, $0.0815, $12.40)."""
    if amount >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}" if amount >= 0.01 else f"${amount:.6f}"


def line_defaults(settings: Settings) -> LineDefaults:
    """What script lines that leave a field out get: the settings' defaults."""
    from voicecache.warmup.runner import LineDefaults

    return LineDefaults(
        voice=settings.default_voice,
        format=settings.storage_codec,
        normalization=settings.normalization,
        max_text_chars=settings.max_text_chars,
    )


def _client(url: str, api_key: str | None, timeout: float) -> httpx.AsyncClient:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)


# -- warm ----------------------------------------------------------------------------------------


@command
def warm(
    file: Annotated[Path, typer.Argument(help="CSV, JSON lines (.jsonl) or plain text file")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Lines in flight")] = 4,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Also store this format (default: storage codec)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Pre-generate every line of FILE into the cache (lines already cached cost nothing)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from voicecache.warmup.script import read_script

    settings = load_settings(config)
    if fmt is not None and fmt not in FORMATS:
        fail(f"--format must be one of: {', '.join(FORMATS)}", 2)
    script = read_script(file)  # ScriptError: exit 2
    if not script.lines and not script.bad:
        fail(f"{file} holds no lines to warm", 2)

    async def work() -> WarmReport:
        with Progress(
            TextColumn("[bold]warming"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]{task.fields[new]} new[/] · {task.fields[cached]} cached · "
                "[red]{task.fields[failed]} failed[/]"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        ) as progress:
            counts = {"new": 0, "cached": 0, "failed": len(script.bad)}
            # The counts travel as task fields, which the bar's text columns read.
            task = progress.add_task("warm", total=len(script.lines), **counts)  # type: ignore[arg-type]

            def done(result: LineResult) -> None:
                counts[result.outcome] += 1
                progress.update(task, advance=1, **counts)  # type: ignore[arg-type]

            return await _warm_with_target(settings, url, api_key, fmt, concurrency, done, script)

    report = run(work)
    _print_warm_report(report, url)
    if report.failures:
        raise typer.Exit(1)


async def _warm_with_target(
    settings: Settings,
    url: str | None,
    api_key: str | None,
    fmt: str | None,
    concurrency: int,
    done: Callable[[LineResult], None],
    script: Script,
) -> WarmReport:
    from voicecache.warmup.runner import LocalTarget, RemoteTarget, warm_lines

    async def go(target: Target) -> WarmReport:
        return await warm_lines(
            script.lines,
            target,
            concurrency=concurrency,
            bad=script.bad,
            price_per_million_chars=settings.price_per_million_chars,
            on_done=done,
        )

    if url is not None:
        async with _client(url, api_key, settings.client_timeout) as client:
            remote = RemoteTarget(client, line_defaults(settings), fmt)
            await remote.check()  # ServerUnreachable: exit 1
            return await go(remote)
    from voicecache.bootstrap import open_services

    async with open_services(settings) as services:
        gateway = services.gateway
        return await go(LocalTarget(gateway, line_defaults(settings), fmt))


def _print_warm_report(report: WarmReport, url: str | None) -> None:
    table = Table(
        title=f"warm-up {'via ' + url if url else 'into the local store'}", show_header=False
    )
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("new (synthesized)", f"{report.count('new'):,}")
    table.add_row("already cached", f"{report.count('cached'):,}")
    table.add_row("failed", f"{report.count('failed'):,}")
    table.add_row("characters synthesized", f"{report.characters:,}")
    table.add_row(
        "estimated cost", f"{money(report.cost)} (${report.price_per_million_chars:g}/M chars)"
    )
    table.add_row("time", f"{report.seconds:.1f} s")
    out.print(table)
    for failure in report.failures:
        out.print(f"line {failure.line}: {failure.reason}", markup=False, highlight=False)


# -- stats ---------------------------------------------------------------------------------------


@command
def stats(
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Hit ratio, tiers, engines and savings (of a running server with --url; else what the
    local store holds)."""
    settings = load_settings(config)
    if url is not None:
        data = run(lambda: _remote_stats(url, api_key, settings.client_timeout))
        if as_json:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        _print_server_stats(data)
        return
    data = run(lambda: _local_stats(settings))
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    _print_local_stats(data)


async def _remote_stats(url: str, api_key: str | None, seconds: float) -> dict[str, Any]:
    import httpx

    async with _client(url, api_key, seconds) as client:
        try:
            response = await client.get("/dashboard/data")
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {exc}")
        if response.status_code in (401, 403):
            need = (
                "pass a key"
                if response.status_code == 401
                else "the key lacks the admin scope; pass one that has it"
            )
            fail(
                f"{url} answered /dashboard/data with HTTP {response.status_code}: {need} "
                "with --api-key or VOICECACHE_API_KEY"
            )
        if response.status_code != 200:
            fail(f"{url} answered /dashboard/data with HTTP {response.status_code}")
        data: dict[str, Any] = response.json()
        return data


async def _local_stats(settings: Settings) -> dict[str, Any]:
    """What the configured tiers hold, from their stats and entry headers. Counters such as
    the hit ratio live in a server process: ask it with --url."""
    from voicecache.bootstrap import open_services

    async with open_services(settings) as services:
        gateway = services.gateway
        tiers = []
        engines: dict[str, dict[str, float]] = {}
        for tier in gateway.cache.tiers:
            info = await tier.stats()
            tiers.append(
                {
                    "name": info.name,
                    "entries": info.entries,
                    "bytes": info.bytes,
                    "capacity_bytes": info.capacity_bytes,
                    "evictions": info.evictions,
                    "errors": info.errors,
                }
            )
        # Characters stored: canonical entries only, each line once, from the slowest tier
        # that holds entries (the most complete one).
        for tier in reversed(gateway.cache.tiers):
            seen: set[str] = set()
            async for _, meta in tier.scan():
                if meta.key in seen:
                    continue
                seen.add(meta.key)
                per = engines.setdefault(meta.engine or "?", {"lines": 0, "characters": 0})
                per["lines"] += 1
                per["characters"] += len(meta.text)
            if seen:
                break
    price = settings.price_per_million_chars
    return {
        "tiers": tiers,
        "engines": {
            name: {**value, "regeneration_cost": value["characters"] * price / 1_000_000}
            for name, value in engines.items()
        },
        "price_per_million_chars": price,
    }


def _size(n: float | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _tier_table(tiers: list[dict[str, Any]], hits: dict[str, float] | None = None) -> Table:
    table = Table(title="tiers")
    for column in ("tier", "entries", "bytes", "capacity", "fill", "evictions", "errors"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    if hits is not None:
        table.add_column("hits", justify="right")
    for tier in tiers:
        capacity = tier.get("capacity_bytes")
        fill = f"{100 * tier['bytes'] / capacity:.1f}%" if capacity else "–"
        row = [
            tier["name"],
            f"{tier['entries']:,}",
            _size(tier["bytes"]),
            _size(capacity),
            fill,
            f"{tier['evictions']:,}",
            f"{tier.get('errors', 0):,}",
        ]
        if hits is not None:
            row.append(f"{hits.get(tier['name'], 0):,.0f}")
        table.add_row(*row)
    return table


def _print_server_stats(data: dict[str, Any]) -> None:
    totals = data["totals"]
    requests = totals["requests"]
    ratio = totals["hit_ratio"]
    summary = Table(title="requests", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", justify="right")
    summary.add_row("hit ratio", "–" if ratio is None else f"{ratio * 100:.1f}%")
    for result in ("hit", "miss", "coalesced", "stale", "error"):
        summary.add_row(result, f"{requests.get(result, 0):,.0f}")
    out.print(summary)
    out.print(_tier_table(data["tiers"], totals["hits_by_tier"]))
    engines = Table(title="engines")
    for column in ("engine", "model", "circuit", "calls ok", "failed"):
        engines.add_column(column, justify="right" if column in ("calls ok", "failed") else "left")
    for name, engine in data["engines"].items():
        calls = totals["engine_calls"].get(name, {})
        failed = sum(n for outcome, n in calls.items() if outcome != "ok")
        engines.add_row(
            name,
            engine.get("model_version") or "",
            engine.get("state") or "–",
            f"{calls.get('ok', 0):,.0f}",
            f"{failed:,.0f}",
        )
    out.print(engines)
    savings = Table(title="savings", show_header=False)
    savings.add_column("", style="bold")
    savings.add_column("", justify="right")
    savings.add_row("characters served from cache", f"{totals['characters']['cache']:,.0f}")
    savings.add_row("characters synthesized", f"{totals['characters']['engine']:,.0f}")
    savings.add_row(
        "estimated money saved",
        f"{money(totals['cost_saved'])} (${totals['price_per_million_chars']:g}/M chars)",
    )
    out.print(savings)


def _print_local_stats(data: dict[str, Any]) -> None:
    out.print(_tier_table(data["tiers"]))
    engines = Table(title="stored lines by engine")
    for column in ("engine", "lines", "characters", "cost to regenerate"):
        engines.add_column(column, justify="left" if column == "engine" else "right")
    for name, value in data["engines"].items():
        engines.add_row(
            name,
            f"{value['lines']:,.0f}",
            f"{value['characters']:,.0f}",
            money(value["regeneration_cost"]),
        )
    out.print(engines)
    out.print(
        "hit ratio and savings are counted by a running server: "
        "`voicecache stats --url http://127.0.0.1:8080`",
        style="dim",
    )
