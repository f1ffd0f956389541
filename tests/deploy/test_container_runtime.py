"""The image's contract, exercised without a container daemon: `voicecache serve` with the
Dockerfile's environment (0.0.0.0, port, data dir), the README's `keys add` step, the
HEALTHCHECK command, and the Kubernetes probe paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy import dockerfile as df
from tests.deploy.conftest import KUBERNETES, voicecache_command
from tests.servers import free_port, wait_for_port


def image_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """This process's environment without VOICECACHE_*, plus the image's VOICECACHE_* ENV
    (data dir and port moved to temporary ones), plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOICECACHE_")}
    image = {
        name: value for name, value in df.final_env().items() if name.startswith("VOICECACHE_")
    }
    assert image["VOICECACHE_HOST"] == "0.0.0.0"
    env.update(image)
    env.update(VOICECACHE_DATA_DIR=str(data_dir), VOICECACHE_PORT=str(port))
    env.update({"VOICECACHE_LOG_LEVEL": "warning", **extra})
    return env


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, with this interpreter as `python`."""
    command = df.healthcheck_command()
    assert command[0] == "python"
    env = {**os.environ, "VOICECACHE_PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30
    )


def probe_paths() -> dict[str, str]:
    deployment = yaml.safe_load((KUBERNETES / "base" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }


@dataclass
class Served:
    url: str
    port: int
    key: str
    process: subprocess.Popen[str]


def start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [voicecache_command(), "serve"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=60)
    except TimeoutError:
        process.kill()
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"voicecache serve did not listen: {err[-2000:]}") from None
    return process


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """As in the README: `voicecache keys add` in the data volume, then the image's command."""
    data = tmp_path_factory.mktemp("image-data")
    port = free_port()
    env = image_env(data, port)
    added = subprocess.run(
        [voicecache_command(), "keys", "add", "--tenant", "app", "--scope", "speak"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = added.stdout.strip()
    assert key.startswith("vck_") and (data / "keys.json").is_file()
    process = start(env, port)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, key, process)
    finally:
        stop(process)


def test_without_keys_the_image_refuses_to_serve_and_says_how(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [voicecache_command(), "serve"],
        env=image_env(tmp_path, port),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "VOICECACHE_ALLOW_ANONYMOUS" in result.stderr
    assert "voicecache keys add" in result.stderr


def test_anonymous_opt_in_serves_on_every_interface(tmp_path: Path) -> None:
    port = free_port()
    process = start(image_env(tmp_path, port, VOICECACHE_ALLOW_ANONYMOUS="1"), port)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/tts", json={"text": "Open house.", "voice": "en"}, timeout=30
        )
        assert response.status_code == 200 and response.content[:4] == b"RIFF"
    finally:
        stop(process)


def test_keys_protect_the_api_but_not_the_health_check(served: Served) -> None:
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    body = {"text": "Keys required.", "voice": "en"}
    assert httpx.post(f"{served.url}/tts", json=body, timeout=30).status_code == 401
    response = httpx.post(
        f"{served.url}/tts",
        json=body,
        headers={"authorization": f"Bearer {served.key}"},
        timeout=30,
    )
    assert response.status_code == 200 and response.content[:4] == b"RIFF"  # eSpeak from the wheel


def test_healthcheck_command_passes_against_the_server(served: Served) -> None:
    result = healthcheck(served.port)
    assert result.returncode == 0, result.stderr


def test_healthcheck_command_fails_when_nothing_answers() -> None:
    result = healthcheck(free_port())
    assert result.returncode != 0
    assert "Connection refused" in result.stderr or "URLError" in result.stderr


def test_liveness_and_startup_probes_need_no_key(served: Served) -> None:
    paths = probe_paths()
    assert paths["livenessProbe"] == paths["startupProbe"] == "/healthz"
    for probe in ("livenessProbe", "startupProbe"):
        assert httpx.get(served.url + paths[probe], timeout=10).status_code == 200


def test_readiness_probe_path_exists_and_needs_no_key(served: Served) -> None:
    path = probe_paths()["readinessProbe"]
    assert path == "/readyz"
    keyed = httpx.get(
        served.url + path, headers={"authorization": f"Bearer {served.key}"}, timeout=10
    )
    if keyed.status_code == 404:
        pytest.skip(f"{path} is not served by this build yet (issue #16 adds it)")
    anonymous = httpx.get(served.url + path, timeout=10)
    assert anonymous.status_code in (200, 503), (
        f"the kubelet sends no key: {path} must be public, got {anonymous.status_code}"
    )
    assert anonymous.status_code == 200, "ready with the embedded engine and local tiers"


def test_server_stops_gracefully_on_sigterm_within_the_grace_period(tmp_path: Path) -> None:
    """Kubernetes sends SIGTERM, then SIGKILL after terminationGracePeriodSeconds."""
    deployment = yaml.safe_load((KUBERNETES / "base" / "deployment.yaml").read_text())
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    port = free_port()
    env = image_env(tmp_path, port, VOICECACHE_ALLOW_ANONYMOUS="1", VOICECACHE_LOG_LEVEL="info")
    process = start(env, port)
    began = time.monotonic()
    process.terminate()
    try:
        _, err = process.communicate(timeout=grace)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert time.monotonic() - began < grace
    assert "Application shutdown complete" in err, err[-2000:]
    # uvicorn re-raises the signal it handled, so the exit status is SIGTERM's.
    assert process.returncode in (0, -15)
