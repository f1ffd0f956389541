"""Hostile input over real HTTP: oversized and slow bodies, slow headers, path tricks, and a
schemathesis run against the app's own OpenAPI schema."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveApp, error_message
from tests.servers import UvicornThread
from tests.voice_samples import master_key, voice_like
from voicecache.http.app import create_app
from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings


def raw_exchange(live: LiveApp, payload: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server answers and closes (or `wait` passes)."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as conn:
        conn.sendall(payload)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and b'"detail"' in received:
                    break
        except TimeoutError:
            pass
        return received


def test_body_over_the_limit_is_413_before_parsing(live: LiveApp) -> None:
    text = "x" * (70 * 1024)
    response = live.client.post("/tts", json={"text": text, "voice": "en"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert live.engine_calls() == 0


def test_chunked_body_over_the_limit_is_413(live: LiveApp) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'", "voice": "en"}'

    response = live.client.post(
        "/tts", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body is over the limit")


def test_upload_limit_is_enforced_from_content_length(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings.model_copy(update={"max_upload_bytes": 50_000}))
    big = voice_like(seconds=10.0)  # 320 KB, over the limit plus the multipart allowance
    response = live.client.post(
        "/v1/voices", data={"name": "big"}, files={"file": ("big.wav", big)}
    )
    assert response.status_code == 413
    assert "limit" in error_message(response)
    assert not (settings.data_dir / "voices").exists()


def test_slow_body_is_cut_off_with_408(serve: Callable[..., LiveApp], settings: Settings) -> None:
    live = serve(settings.model_copy(update={"client_timeout": 0.5}))
    started = time.monotonic()
    answer = raw_exchange(
        live,
        b"POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 200\r\n\r\n{"text": ',
    )
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"not received within 0.5 s" in answer
    assert time.monotonic() - started < 4


def test_slow_headers_are_cut_off(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HeaderDeadlineProtocol, "header_timeout", 0.5)
    server = UvicornThread(create_app(settings), lifespan="on", http=HeaderDeadlineProtocol)
    with server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""  # a connection that never sends a request is closed
            assert time.monotonic() - started < 4
        with socket.create_connection((host, int(port)), timeout=5) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and never finishes
            started = time.monotonic()
            assert slow.recv(1) == b""
            assert 0.3 < time.monotonic() - started < 4
        with socket.create_connection((host, int(port)), timeout=5) as good:
            good.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert good.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/tts", {"text": "hi", "voice": "../../etc/passwd"}, 422),
        ("POST", "/tts", {"text": "hi", "voice": "v-../../../keys"}, 422),
        ("POST", "/tts", {"text": "hi", "voice": "en", "emotion": "<script>"}, 422),
        ("POST", "/tts", {"text": "hi", "voice": "en", "format": "exe"}, 422),
        ("POST", "/v1/audio/speech", {"input": "hi", "voice": "en", "response_format": "x"}, 400),
        ("GET", "/v1/voices/..%2F..%2Fkeys.json", None, 404),
        ("GET", "/v1/voices/v-0123456789abcdef%00", None, 404),
        ("DELETE", "/v1/voices/%2e%2e", None, 404),
        ("GET", "/v1/audio/..%2F..%2Fkeys.json.wav", None, 404),
    ],
)
def test_paths_and_ids_are_never_trusted(
    live: LiveApp, method: str, path: str, body: object, status: int
) -> None:
    response = live.client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert error_message(response)


def test_schemathesis_finds_no_5xx_and_no_schema_violations(
    serve: Callable[..., LiveApp], settings: Settings, tmp_path: Path
) -> None:
    secured = settings.model_copy(update={"master_key": master_key()})
    token, _ = KeyStore(secured.keys_path).add("ops", ["speak", "voices", "admin"])
    live = serve(secured)
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli), "run", f"{live.url}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error,response_schema_conformance,"
            "status_code_conformance,content_type_conformance",
            "--max-time", "25", "--workers", "2", "--seed", "6",
            "--generation-database", "none", "--no-color", "--suppress-health-check", "all",
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
