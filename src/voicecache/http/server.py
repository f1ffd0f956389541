"""How the app is served: the uvicorn factory for worker processes and the bind-safety check."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.types import ASGIApp

from voicecache.errors import ConfigError
from voicecache.security.exposure import is_loopback
from voicecache.settings import Settings


def app_from_environment() -> ASGIApp:
    """uvicorn factory: every worker process builds its app from the environment (and the
    TOML file named by `VOICECACHE_CONFIG`); with `PROMETHEUS_MULTIPROC_DIR` set (by
    `voicecache serve` for several workers) it counts its metrics in the shared files there."""
    from voicecache.allocator import tune_allocator
    from voicecache.http.app import create_app
    from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol

    tune_allocator()  # a long-running server: keep malloc from fragmenting (allocator.py)
    settings = Settings()
    HeaderDeadlineProtocol.header_timeout = settings.client_timeout
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return create_app(settings, metrics_dir=Path(shared) if shared else None)


def check_bind_is_safe(settings: Settings) -> None:
    """Refuse to serve beyond loopback without API keys unless explicitly allowed."""
    if is_loopback(settings.host) or settings.allow_anonymous:
        return
    from voicecache.errors import KeysUnavailable
    from voicecache.security.auth import KeyStore

    try:
        if KeyStore(settings.keys_path).configured:
            return
    except KeysUnavailable as exc:
        raise ConfigError(exc.detail) from exc
    raise ConfigError(
        f"refusing to serve on {settings.host} without API keys: create one with "
        "`voicecache keys add`, or set VOICECACHE_ALLOW_ANONYMOUS=1"
    )
