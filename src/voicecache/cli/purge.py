"""`voicecache purge`: remove cached audio by filter, no server needed.

It opens the configured tiers itself and purges them (disk, Redis, S3), then announces the
purge on the purge feed, so running servers drop their in-memory copies within a second. The
purge is recorded in the audit log, as purges over HTTP are.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voicecache.bootstrap import open_services
from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import PurgeReport, purge
from voicecache.cli.common import ConfigOption, command, fail, load_settings, run


@command
def purge_command(
    key: Annotated[str | None, typer.Option(help="A cache key (optionally .format)")] = None,
    voice: Annotated[str | None, typer.Option(help="Every entry of this voice")] = None,
    tag: Annotated[str | None, typer.Option(help="Every entry carrying this tag")] = None,
    engine: Annotated[str | None, typer.Option(help="Every entry of this engine")] = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Every entry of this model version")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Created longer ago than, e.g. 7d")
    ] = None,
    expired: Annotated[bool, typer.Option("--expired", help="Entries past their TTL")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Everything")] = False,
    config: ConfigOption = None,
) -> None:
    """Remove cached audio matching every given filter; prints entries and bytes per tier."""
    settings = load_settings(config)

    flt = PurgeFilter.create(
        now=time.time(),
        key=key,
        voice=voice,
        tag=tag,
        engine=engine,
        model_version=model_version,
        older_than=older_than,
        expired=expired,
        all_entries=everything,
    )

    async def work() -> PurgeReport:
        # The purge feed is attached by `build`: running servers on this host (and replicas
        # sharing Redis) drop their in-memory copies.
        async with open_services(settings) as services:
            report = await purge(services.gateway.cache, flt)
            # An admin action like any other: recorded as the HTTP purge is (actor `cli`).
            services.audit.record(
                "cache.purge", "cli", filter=report.filter, entries=report.entries
            )
            return report

    report = run(work)
    table = Table(title="purged")
    table.add_column("tier")
    table.add_column("entries", justify="right")
    table.add_column("bytes", justify="right")
    for name, result in report.tiers.items():
        table.add_row(name, str(result.entries), f"{result.bytes:,}")
    table.add_row("total", str(report.entries), f"{report.bytes:,}", style="bold")
    Console().print(table)
    if report.errors:
        fail("; ".join(f"{name}: {error}" for name, error in report.errors.items()))
