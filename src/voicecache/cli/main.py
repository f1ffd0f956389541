"""The `voicecache` command: serve, say, key (and more commands registered by other modules).

Commands are thin: they parse arguments, build settings once, and call the gateway (or a
running server). Any `VoicecacheError` ends the command with one readable line on stderr and
exit code 1; bad usage exits with 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from voicecache.errors import ConfigError, VoicecacheError
from voicecache.model import SpeechRequest
from voicecache.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="voicecache",
    help="A caching gateway for text-to-speech.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file", show_default=False)
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment and `--config`, or exit with a readable line."""
    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except FileNotFoundError as exc:
        fail(str(exc), 2)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        fail(f"invalid settings: {_first_line(str(exc))}", 2)


def speech_request(settings: Settings, **fields: Any) -> SpeechRequest:
    """A `SpeechRequest` from command-line fields, normalized and bounded as the server would."""
    return SpeechRequest.create(
        normalization=settings.normalization, max_text_chars=settings.max_text_chars, **fields
    )


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run async work, turning voicecache errors into one line and exit code 1."""
    try:
        return asyncio.run(_call(work))
    except ConfigError as exc:
        fail(exc.detail, 2)
    except VoicecacheError as exc:
        fail(exc.detail)


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:3])


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API (default http://127.0.0.1:8080)."""
    import uvicorn

    settings = load_settings(config, host=host, port=port, workers=workers)
    from voicecache.http.server import check_bind_is_safe

    try:
        check_bind_is_safe(settings)
    except ConfigError as exc:
        fail(exc.detail, 2)
    # Worker processes build their own settings from the environment: hand them ours.
    os.environ.update(
        {
            f"VOICECACHE_{name.upper()}": str(value)
            for name, value in {"host": host, "port": port, "workers": workers}.items()
            if value is not None
        }
    )
    if config is not None:
        os.environ["VOICECACHE_CONFIG"] = str(config)
    from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol

    # Slow clients: headers must arrive within client_timeout (HeaderDeadlineProtocol), bodies
    # too (security middleware, 408); idle keep-alive connections close after 30 s.
    uvicorn.run(
        "voicecache.http.server:app_from_environment",
        http=HeaderDeadlineProtocol,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=30,
        limit_concurrency=None,
        timeout_graceful_shutdown=10,
    )


@app.command()
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
    from voicecache.bootstrap import open_gateway

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
        async with open_gateway(settings) as gateway:
            result = await gateway.speak(request)
        try:
            output.write_bytes(result.data)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
        return f"{result.status} {result.key} {len(result.data)} bytes → {output}"

    typer.echo(run(work))


@app.command()
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
    from voicecache.bootstrap import open_gateway

    async def work() -> dict[str, Any]:
        request = speech_request(
            settings, text=text, voice=voice, emotion=emotion, speed=speed, engine=engine
        )
        async with open_gateway(settings) as gateway:
            plan = await gateway.plan(request)
        return {"key": plan.key.digest, "normalized_text": request.text, "fields": plan.key.fields}

    info = run(work)
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        typer.echo(f"normalized: {info['normalized_text']}")
        typer.echo(f"key:        {info['key']}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


from voicecache.cli import doctor, keys, ops, purge  # noqa: E402,F401
