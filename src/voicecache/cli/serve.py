"""`voicecache serve`: the HTTP API under uvicorn, one or more worker processes."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from voicecache.cli.common import ConfigOption, command, load_settings, run
from voicecache.settings import Settings


@command
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

    check_bind_is_safe(settings)  # ConfigError: exit 2
    # Build every part once before starting workers, so a bad engine, tier or master key ends
    # here with one line (exit 2) instead of a traceback from inside uvicorn's startup.
    run(lambda: _build_and_close(settings))
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
    if settings.workers > 1:
        # Every worker counts in files here, so /metrics and the dashboard add them all up
        # (observability/multiprocess.py). Emptied first: counts start at zero with the
        # server, and no dead process's files linger.
        shared = settings.data_dir / "metrics"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    from voicecache.http.protocol import GatewayProtocol

    # Slow clients: headers must arrive within client_timeout (HeaderDeadlineProtocol), bodies
    # too (security middleware, 408); idle keep-alive connections close after 30 s. Plain
    # memory hits are answered in the protocol itself (GatewayProtocol, http/protocol.py).
    uvicorn.run(
        "voicecache.http.server:app_from_environment",
        http=GatewayProtocol,
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


async def _build_and_close(settings: Settings) -> None:
    from voicecache.bootstrap import open_services

    async with open_services(settings):
        pass
