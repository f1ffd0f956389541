"""The `voicecache` command: one Typer app with every command registered here.

Commands live in one module per group (`serve`, `speech`, `ops`, `inspection`, `purge`,
`keys`, `doctor`) and know nothing of this app, so nothing imports in a circle. They are thin:
parse arguments, load settings once, and call the composition root (`bootstrap.py`) or a
running server.
"""

from __future__ import annotations

import sys

import typer

from voicecache.cli import doctor, inspection, keys, ops, purge, serve, speech

app = typer.Typer(
    name="voicecache",
    help="A caching gateway for text-to-speech.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(serve.serve)
app.command()(speech.say)
app.command()(speech.key)
app.command()(ops.warm)
app.command()(ops.stats)
app.command()(inspection.inspect)
app.command("purge")(purge.purge_command)
app.command()(doctor.doctor)
app.add_typer(keys.keys_app, name="keys")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
