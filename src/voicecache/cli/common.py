"""What every `voicecache` command shares: the `--config` option, loading settings, running
async work, and the one place where errors become a readable line and an exit code.

Exit codes: 0 success; 1 an operation failed; 2 bad usage or settings. A `VoicecacheError`
carries its own `exit_code` (see `errors.py`), so commands just raise and `command()` prints.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

from voicecache.errors import VoicecacheError
from voicecache.model import SpeechRequest
from voicecache.settings import Settings

T = TypeVar("T")
P = ParamSpec("P")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file", show_default=False)
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def command(function: Callable[P, T]) -> Callable[P, T]:
    """Wrap a command so any `VoicecacheError` ends it with one line and the error's exit code."""

    @functools.wraps(function)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except VoicecacheError as exc:
            fail(exc.detail, exc.exit_code)

    return guarded


def load_settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment and `--config`, or exit with a readable line."""
    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except FileNotFoundError as exc:
        fail(str(exc), 2)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        fail(f"invalid settings: {first_line(str(exc))}", 2)


def speech_request(settings: Settings, **fields: Any) -> SpeechRequest:
    """A `SpeechRequest` from command-line fields, normalized and bounded as the server would."""
    return SpeechRequest.create(
        normalization=settings.normalization, max_text_chars=settings.max_text_chars, **fields
    )


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run async work to its end (errors propagate to `command()`)."""

    async def call() -> T:
        return await work()

    return asyncio.run(call())


def first_line(text: str) -> str:
    """Up to three non-blank lines of a long message, joined into one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:3])
