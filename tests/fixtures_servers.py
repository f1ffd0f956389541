"""Ready-made pytest fixtures for the real servers in :mod:`tests.servers` and the fakes.

Import them into ``tests/conftest.py`` (``from tests.fixtures_servers import *``) or list the
module in ``pytest_plugins``. Session-scoped servers are shared by every test; state is not
cleared between tests, except by the function-scoped fixtures that say so:

- ``redis_server`` (session): a :class:`RedisServer`; ``redis_url`` (function) flushes it
  first and returns its URL.
- ``redis_cluster`` (session): a 3-master :class:`RedisCluster`.
- ``s3_server`` (session): a :class:`MotoS3Server`; ``s3_bucket`` (function) creates a fresh,
  uniquely named bucket on it and returns the name.
- ``fake_emotivoice_server`` / ``fake_openai_server`` (session): a started
  :class:`UvicornThread` serving the fake, with the fake as ``.engine``;
  ``fake_emotivoice`` / ``fake_openai`` (function) reset the fake's switches and counters
  and return the same server object. The OpenAI fake requires the key ``FAKE_OPENAI_KEY``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fakes import FakeControls, FakeEngine
from tests.fakes import emotivoice as fake_emotivoice_module
from tests.fakes import openai_tts as fake_openai_module
from tests.servers import MotoS3Server, RedisCluster, RedisServer, UvicornThread

__all__ = [
    "FAKE_OPENAI_KEY",
    "FakeEngineServer",
    "fake_emotivoice",
    "fake_emotivoice_server",
    "fake_openai",
    "fake_openai_server",
    "redis_cluster",
    "redis_server",
    "redis_url",
    "s3_bucket",
    "s3_server",
]

FAKE_OPENAI_KEY = "sk-fake-test-key"


class FakeEngineServer(UvicornThread):
    """A :class:`UvicornThread` serving a fake engine; ``.engine.controls`` steers it."""

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(engine.app)
        self.engine = engine

    @property
    def controls(self) -> FakeControls:
        """Shortcut for ``engine.controls``."""
        return self.engine.controls


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, flushed (restarted if a test killed it)."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real 3-master Redis Cluster for the whole session (takes ~2-3 s to form)."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    """moto's S3 server for the whole session."""
    with MotoS3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: MotoS3Server) -> str:
    """A new, empty bucket with a unique name on the session's S3 server."""
    s3_server.start()
    return s3_server.create_bucket(f"test-{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def fake_emotivoice_server() -> Iterator[FakeEngineServer]:
    """The fake EmotiVoice engine served for the whole session."""
    with FakeEngineServer(fake_emotivoice_module.create_app()) as server:
        yield server


@pytest.fixture
def fake_emotivoice(fake_emotivoice_server: FakeEngineServer) -> FakeEngineServer:
    """The session's fake EmotiVoice with switches and counters reset."""
    fake_emotivoice_server.engine.controls.reset()
    return fake_emotivoice_server


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeEngineServer]:
    """The fake OpenAI speech API served for the whole session (key ``FAKE_OPENAI_KEY``)."""
    with FakeEngineServer(fake_openai_module.create_app(api_key=FAKE_OPENAI_KEY)) as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server: FakeEngineServer) -> FakeEngineServer:
    """The session's fake OpenAI API with switches and counters reset."""
    fake_openai_server.engine.controls.reset()
    return fake_openai_server
