"""`voicecache say` and `voicecache key`: one line through the cache, no server needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from voicecache.cli.common import ConfigOption, command, fail, load_settings, run, speech_request


@command
def say(
    text: Annotated[str, typer.Argument(help="Text to speak")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write")],
    voice: Annotated[str, typer.Option(help="Voice id")] = "en",
    emotion: Annotated[str, typer.Option(help="Emotion")] = "neutral",
    speed: Annotated[float, typer.Option(help="0.25 to 4.0")] = 1.0,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="wav, flac, mp3, opus, pcm")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="Engine name")] = None,
    config: ConfigOption = None,
) -> None:
    """Synthesize TEXT through the cache (no server needed) and write it to a file."""
    settings = load_settings(config)
    from voicecache.bootstrap import open_services

    fmt = fmt or (output.suffix.lstrip(".").lower() or "wav")

    async def work() -> str:
        request = speech_request(
            settings,
            text=text,
            voice=voice,
            emotion=emotion,
            speed=speed,
            format=fmt,
            engine=engine,
        )
        async with open_services(settings) as services:
            gateway = services.gateway
            result = await gateway.speak(request)
        try:
            output.write_bytes(result.data)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
        return f"{result.status} {result.key} {len(result.data)} bytes → {output}"

    typer.echo(run(work))


@command
def key(
    text: Annotated[str, typer.Argument(help="Text")],
    voice: Annotated[str, typer.Option(help="Voice id")] = "en",
    emotion: Annotated[str, typer.Option(help="Emotion")] = "neutral",
    speed: Annotated[float, typer.Option(help="0.25 to 4.0")] = 1.0,
    engine: Annotated[str | None, typer.Option(help="Engine name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Print the normalized text and the cache key of a request."""
    settings = load_settings(config)
    from voicecache.bootstrap import open_services

    async def work() -> dict[str, Any]:
        request = speech_request(
            settings, text=text, voice=voice, emotion=emotion, speed=speed, engine=engine
        )
        async with open_services(settings) as services:
            gateway = services.gateway
            plan = await gateway.plan(request)
        return {"key": plan.key.digest, "normalized_text": request.text, "fields": plan.key.fields}

    info = run(work)
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        typer.echo(f"normalized: {info['normalized_text']}")
        typer.echo(f"key:        {info['key']}")
