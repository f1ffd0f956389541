"""`voicecache doctor` against real Redis servers (single node and Cluster) and moto's S3."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fixtures_servers import FakeEngineServer
from tests.servers import MotoS3Server, RedisCluster, RedisServer, free_port
from voicecache.cli.doctor import redact
from voicecache.cli.main import app

runner = CliRunner()


def doctor(tmp_path: Path, **env: str) -> tuple[int, str]:
    result = runner.invoke(app, ["doctor"], env={"VOICECACHE_DATA_DIR": str(tmp_path), **env})
    return result.exit_code, result.output


@pytest.fixture
def bounded_redis() -> Iterator[RedisServer]:
    with RedisServer(maxmemory="64mb", policy="volatile-lfu") as server:
        yield server


@pytest.mark.redis
def test_unbounded_redis_is_a_warning(redis_server: RedisServer, tmp_path: Path) -> None:
    code, output = doctor(tmp_path, VOICECACHE_REDIS_URL=redis_server.url)
    assert code == 0, output
    assert "maxmemory is 0" in output and "volatile-lfu" in output
    assert "ok: redis" in output


@pytest.mark.redis
def test_bounded_volatile_lfu_redis_is_ok(bounded_redis: RedisServer, tmp_path: Path) -> None:
    code, output = doctor(tmp_path, VOICECACHE_REDIS_URL=bounded_redis.url)
    assert code == 0 and "warning" not in output
    assert "maxmemory 64 MiB, volatile-lfu" in output


@pytest.mark.redis
def test_allkeys_eviction_is_a_warning(tmp_path: Path) -> None:
    with RedisServer(maxmemory="64mb", policy="allkeys-lru") as server:
        code, output = doctor(tmp_path, VOICECACHE_REDIS_URL=server.url)
    assert code == 0, output
    assert "allkeys-lru may evict the cache's index" in output


@pytest.mark.redis
def test_noeviction_is_a_warning_on_every_cluster_master(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_cluster.port}"
    code, output = doctor(tmp_path, VOICECACHE_REDIS_URL=url)
    assert code == 0, output
    assert output.count("maxmemory-policy is noeviction") == 3  # Redis's default policy
    assert output.count("ok: redis") == 3


@pytest.mark.s3
def test_s3_bucket_access(s3_server: MotoS3Server, s3_bucket: str, tmp_path: Path) -> None:
    env = {
        "VOICECACHE_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": s3_server.region,
    }
    code, output = doctor(tmp_path, VOICECACHE_S3_BUCKET=s3_bucket, **env)
    assert code == 0 and f"ok: s3 bucket {s3_bucket}" in output
    code, output = doctor(tmp_path, VOICECACHE_S3_BUCKET="missing-bucket", **env)
    assert code == 1 and "missing-bucket" in output


def test_unreachable_redis_fails_with_one_line(tmp_path: Path) -> None:
    server = RedisServer()  # a free port nobody listens on
    server.close()
    result = subprocess.run(
        [sys.executable, "-m", "voicecache", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "VOICECACHE_DATA_DIR": str(tmp_path),
            "VOICECACHE_REDIS_URL": f"redis://:hunter2@127.0.0.1:{server.port}/0",
        },
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: redis at redis://:***@127.0.0.1")
    assert "hunter2" not in result.stderr


def test_missing_settings_fail(tmp_path: Path) -> None:
    code, output = doctor(tmp_path, VOICECACHE_TIERS="memory,redis")
    assert code == 1 and "VOICECACHE_REDIS_URL" in output
    code, output = doctor(tmp_path)
    assert code == 0 and "nothing shared to check" in output


def test_redact() -> None:
    assert redact("rediss://user:secret@h:6380/1") == "rediss://user:***@h:6380/1"
    assert redact("redis://h:6379") == "redis://h:6379"


# -- engines -------------------------------------------------------------------------------------


def test_engines_are_checked_and_espeak_can_speak(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["doctor", "--synthesize"], env={"VOICECACHE_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert "ok: engine espeak (espeak) is reachable; synthesized" in result.output
    assert "22050 Hz" in result.output


def test_an_engine_that_refuses_connections_fails_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    result = subprocess.run(
        [sys.executable, "-m", "voicecache", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "VOICECACHE_DATA_DIR": str(tmp_path),
            "VOICECACHE_ENGINE": "emotivoice",
            "VOICECACHE_EMOTIVOICE_URL": f"http://127.0.0.1:{port}",
        },
    )
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"error: engine emotivoice at http://127.0.0.1:{port} is unreachable: ConnectError"
    )


def test_a_running_engine_is_probed_and_synthesizes_once(
    fake_emotivoice: FakeEngineServer, tmp_path: Path
) -> None:
    env = {
        "VOICECACHE_DATA_DIR": str(tmp_path),
        "VOICECACHE_EMOTIVOICE_URL": fake_emotivoice.url,
    }
    code, output = doctor(tmp_path, **env)
    assert code == 0, output
    assert f"ok: engine emotivoice (emotivoice at {fake_emotivoice.url}) is reachable" in output
    assert fake_emotivoice.controls.calls == 0  # a probe is not a synthesis
    result = runner.invoke(app, ["doctor", "--synthesize"], env=env)
    assert result.exit_code == 0, result.output
    assert "synthesized" in result.output and "16000 Hz with voice '8051'" in result.output
    assert fake_emotivoice.controls.calls == 1
    fake_emotivoice.controls.fail_next_n = 1
    result = runner.invoke(app, ["doctor", "--synthesize"], env=env)
    assert result.exit_code == 1 and "engine emotivoice answered HTTP 500" in result.output
