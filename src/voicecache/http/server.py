"""How the app is served: the uvicorn factory for worker processes and the bind-safety check."""

from __future__ import annotations

import ipaddress
import socket

from starlette.types import ASGIApp

from voicecache.errors import ConfigError
from voicecache.settings import Settings


def app_from_environment() -> ASGIApp:
    """uvicorn factory: every worker process builds its app from the environment (and the
    TOML file named by `VOICECACHE_CONFIG`)."""
    from voicecache.http.app import create_app
    from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol

    settings = Settings()
    HeaderDeadlineProtocol.header_timeout = settings.client_timeout
    return create_app(settings)


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` listens on loopback only: a loopback address, or a
    name whose every address is loopback. Empty (every interface), `0`, `::`, `0.0.0.0` and
    names that do not resolve are public."""
    host = host.strip()
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).partition("%")[0] for info in found}
    try:
        return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    except ValueError:
        return False


def check_bind_is_safe(settings: Settings) -> None:
    """Refuse to serve beyond loopback without API keys unless explicitly allowed."""
    if is_loopback(settings.host) or settings.allow_anonymous:
        return
    from voicecache.errors import KeysUnavailable
    from voicecache.security.auth import KeyStore, keys_path

    try:
        if KeyStore(keys_path(settings)).configured:
            return
    except KeysUnavailable as exc:
        raise ConfigError(exc.detail) from exc
    raise ConfigError(
        f"refusing to serve on {settings.host} without API keys: create one with "
        "`voicecache keys add`, or set VOICECACHE_ALLOW_ANONYMOUS=1"
    )
