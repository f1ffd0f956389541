"""Shared fixtures: settings in a temporary data dir, and the real app served over loopback.

Fixtures for real Redis, Redis Cluster and S3 (moto) servers live in `fixtures_servers.py`
and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.servers import UvicornThread
from voicecache.bootstrap import Services
from voicecache.cache.service import Gateway
from voicecache.http.app import create_app
from voicecache.http.protocol import GatewayProtocol
from voicecache.http.state import services_of
from voicecache.settings import Settings

pytest_plugins = ["tests.fixtures_servers"]


def error_message(response: httpx.Response) -> str:
    """The readable message of an error answer: `detail` on native routes, OpenAI's
    `error.message` under `/v1/`."""
    body = response.json()
    return str(body["error"]["message"] if "error" in body else body["detail"])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults, with data in a temporary directory."""
    return Settings(data_dir=tmp_path / "data")


class LiveApp:
    """The real app, served by uvicorn on a loopback port, and a client for it."""

    def __init__(self, app: FastAPI, server: UvicornThread) -> None:
        self.app = app
        self.server = server
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=30)

    @property
    def services(self) -> Services:
        return services_of({"app": self.app})

    @property
    def gateway(self) -> Gateway:
        return self.services.gateway

    def engine_calls(self, name: str = "espeak") -> int:
        return self.gateway.engines[name].calls

    def restart(self) -> None:
        """Stop and start the server: a new gateway, so only persistent tiers remain."""
        self.server.stop()
        self.server.start()

    def close(self) -> None:
        self.client.close()
        self.server.stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveApp]]:
    """Factory: `serve(settings)` starts the app on a free port; all are stopped at the end."""
    started: list[LiveApp] = []

    def start(settings: Settings, **kwargs: Any) -> LiveApp:
        app = create_app(settings, **kwargs)
        # The protocol `voicecache serve` runs: plain memory hits are answered in it.
        server = UvicornThread(app, lifespan="on", http=GatewayProtocol).start()
        live = LiveApp(app, server)
        started.append(live)
        return live

    yield start
    for live in started:
        live.close()


@pytest.fixture
def live(serve: Callable[..., LiveApp], settings: Settings) -> LiveApp:
    """The app with embedded defaults, served over loopback."""
    return serve(settings)
