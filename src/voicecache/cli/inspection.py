"""`voicecache inspect`: what is stored under a key (or for a line of text) and why.

Exit codes: 0 when something is stored; 1 when nothing is (or no key has the given prefix);
2 for bad usage (neither or both of KEY and --text, a malformed or ambiguous key prefix).
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from voicecache.cli.common import ConfigOption, command, fail, load_settings, run, speech_request
from voicecache.cli.ops import JsonOption, out
from voicecache.codecs import FORMATS
from voicecache.settings import Settings

if TYPE_CHECKING:
    from voicecache.model import Tier

_KEY = re.compile(r"^[0-9a-f]{64}$")
_KEY_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")


@command
def inspect(
    key: Annotated[
        str | None,
        typer.Argument(help="A cache key (X-Cache-Key), or a unique prefix of one (≥ 4 hex)"),
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text, instead of a key")] = None,
    voice: Annotated[str | None, typer.Option(help="Voice id (with --text)")] = None,
    emotion: Annotated[str, typer.Option(help="Emotion (with --text)")] = "neutral",
    speed: Annotated[float, typer.Option(help="0.25 to 4.0 (with --text)")] = 1.0,
    engine: Annotated[str | None, typer.Option(help="Engine name (with --text)")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """What is stored under KEY (or for --text …) and why: normalized text, key fields, the
    tiers and formats holding it, TTL left."""
    if (key is None) == (text is None):
        fail("give either a KEY or --text", 2)
    if key is not None and not _KEY_PREFIX.match(key):
        fail(
            "a key is 64 lower-case hex characters (the X-Cache-Key header); a unique prefix "
            "of at least 4 of them will do",
            2,
        )
    settings = load_settings(config)
    info = run(lambda: _inspect(settings, key, text, voice, emotion, speed, engine))
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        _print_inspection(info)
    if not info["stored"]:
        raise typer.Exit(1)


async def _inspect(
    settings: Settings,
    key: str | None,
    text: str | None,
    voice: str | None,
    emotion: str,
    speed: float,
    engine: str | None,
) -> dict[str, Any]:
    from voicecache.bootstrap import open_services

    async with open_services(settings) as services:
        gateway = services.gateway
        info: dict[str, Any] = {}
        if text is not None:
            request = speech_request(
                settings,
                text=text,
                voice=voice or settings.default_voice,
                emotion=emotion,
                speed=speed,
                engine=engine,
            )
            plan = await gateway.plan(request)
            key = plan.key.digest
            info["normalized_text"] = request.text
            info["fields"] = dict(plan.key.fields)
        assert key is not None
        if not _KEY.match(key):
            key = await _unique_key(gateway.cache.tiers, key)
        now = time.time()
        copies: list[dict[str, Any]] = []
        header: dict[str, Any] | None = None
        for tier in gateway.cache.tiers:
            for fmt in FORMATS:
                try:
                    entry = await tier.get(f"{key}.{fmt}")
                except Exception as exc:  # one failing tier must not hide the others
                    copies.append({"tier": tier.name, "format": fmt, "error": str(exc)})
                    continue
                if entry is None:
                    continue
                meta = entry.meta
                header = header or meta.to_json()
                copy: dict[str, Any] = {
                    "tier": tier.name,
                    "format": fmt,
                    "bytes": meta.size,
                    "duration": meta.duration,
                    "ttl_left": None if meta.expires_at is None else meta.expires_at - now,
                    "grace_left": None if meta.stale_until is None else meta.stale_until - now,
                    "pinned": meta.pinned,
                    "sliding": meta.sliding,
                }
                copies.append(copy)
    if header is not None and "fields" not in info:
        info["normalized_text"] = header["text"]
        info["fields"] = {
            name: header.get(name)
            for name in ("engine", "model_version", "voice", "voice_version", "emotion", "speed")
        } | ({"tenant": header["tenant"]} if header.get("tenant") else {})
    info["key"] = key
    info["stored"] = any("bytes" in copy for copy in copies)
    info["copies"] = copies
    if header is not None:
        info["entry"] = {
            name: header.get(name) for name in ("created", "tags", "personalized", "ttl", "tenant")
        }
    return info


async def _unique_key(tiers: list[Tier], prefix: str) -> str:
    """The one stored key that starts with `prefix` (a scan of every tier: a whole key is a
    direct lookup instead). Several: exit 2, the prefix is too short; none: exit 1."""
    found: set[str] = set()
    for tier in tiers:
        async for entry_id, _ in tier.scan():
            if entry_id.startswith(prefix):
                found.add(entry_id.partition(".")[0])
                if len(found) > 1:
                    shown = ", ".join(sorted(found))
                    fail(f"key prefix {prefix} is ambiguous ({shown}, …): give more of it", 2)
    if not found:
        fail(f"nothing stored under a key starting with {prefix}")
    return found.pop()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "pinned"
    if seconds <= 0:
        return "expired"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _print_inspection(info: dict[str, Any]) -> None:
    out.print(f"[bold]key[/]         {info['key']}", highlight=False)
    if "normalized_text" in info:
        out.print("[bold]normalized[/]  ", end="", highlight=False)
        out.print(info["normalized_text"], markup=False, highlight=False)
    for name, value in info.get("fields", {}).items():
        out.print(f"  {name:<14}{value}", markup=False, highlight=False)
    if not info["stored"]:
        out.print("[red]nothing stored under this key[/]")
        return
    table = Table(title="stored copies")
    for column in ("tier", "format", "bytes", "audio s", "TTL left", "grace left"):
        table.add_column(column, justify="left" if column in ("tier", "format") else "right")
    for copy in info["copies"]:
        if "error" in copy:
            table.add_row(copy["tier"], copy["format"], "error", copy["error"], "", "")
            continue
        ttl = "pinned" if copy["pinned"] else _duration(copy["ttl_left"])
        if copy["sliding"]:
            ttl += " (sliding)"
        table.add_row(
            copy["tier"],
            copy["format"],
            f"{copy['bytes']:,}",
            f"{copy['duration']:.2f}",
            ttl,
            _duration(copy["grace_left"]) if not copy["pinned"] else "–",
        )
    out.print(table)
