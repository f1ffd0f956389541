"""Hostile input over real HTTP: oversized and slow bodies, slow headers, path tricks, a
schemathesis run against the app's own OpenAPI schema, and a fixed corpus of hostile strings
and bodies through every route that takes text, and through the CLI."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import LiveApp, error_message
from tests.http.hostile_corpus import BODIES, STRINGS
from tests.servers import UvicornThread
from tests.voice_samples import master_key, voice_like
from voicecache.cli.main import app as cli_app
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


# -- the hostile-input corpus (issue #12) ----------------------------------------------------
# Every string and body of `hostile_corpus` goes through both synthesis routes, the voice
# routes and the CLI: no 5xx, no traceback, and every refusal carries a JSON `detail`.

SYNTHESIS_FIELDS = [
    ("/tts", {"voice": "en"}, "text"),
    ("/tts", {"text": "hi"}, "voice"),
    ("/tts", {"text": "hi", "voice": "en"}, "emotion"),
    ("/tts", {"text": "hi", "voice": "en"}, "engine"),
    ("/tts", {"text": "hi", "voice": "en"}, "format"),
    ("/tts", {"text": "hi", "voice": "en"}, "instructions"),
    ("/tts", {"text": "hi", "voice": "en"}, "tags"),
    ("/v1/audio/speech", {"voice": "alloy"}, "input"),
    ("/v1/audio/speech", {"input": "hi"}, "voice"),
    ("/v1/audio/speech", {"input": "hi", "voice": "alloy"}, "model"),
    ("/v1/audio/speech", {"input": "hi", "voice": "alloy"}, "instructions"),
    ("/v1/audio/speech", {"input": "hi", "voice": "alloy"}, "response_format"),
    ("/v1/audio/speech", {"input": "hi", "voice": "alloy"}, "emotion"),
]


@pytest.fixture
def hostile_live(serve: Callable[..., LiveApp], settings: Settings) -> LiveApp:
    return serve(settings.model_copy(update={"master_key": master_key()}))


@pytest.fixture
def no_tracebacks(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Fails the test if anything logs an error or prints a traceback meanwhile."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-3000:]


def check(
    response: httpx.Response, case: str, where: str, failures: list[tuple[str, str, int, str]]
) -> None:
    """Record a 5xx, or a 4xx without a readable JSON message."""
    status = response.status_code
    if status >= 500:
        failures.append((case, where, status, response.text[:200]))
    elif status >= 400:
        try:
            detail = error_message(response)
        except (ValueError, KeyError, TypeError):
            detail = None
        if not detail:
            failures.append((case, where, status, response.text[:200]))


def post_json(client: httpx.Client, path: str, body: object, **headers: str) -> httpx.Response:
    # json.dumps escapes lone surrogates as \\udXXX, as a client's JSON encoder does.
    return client.post(
        path, content=json.dumps(body).encode(), headers={"content-type": "application/json",
                                                           **headers}
    )  # fmt: skip


@pytest.mark.usefixtures("no_tracebacks")
def test_hostile_strings_through_synthesis_routes(hostile_live: LiveApp) -> None:
    failures: list[tuple[str, str, int, str]] = []
    for case, value in STRINGS.items():
        for path, base, name in SYNTHESIS_FIELDS:
            body = {**base, name: [value] if name == "tags" else value}
            check(post_json(hostile_live.client, path, body), case, f"{path} {name}", failures)
        header = value.encode("utf-8", "surrogatepass")
        if not any(c in header for c in b"\r\n\x00"):  # unsendable in a header otherwise
            response = hostile_live.client.post(
                "/tts", json={"text": "hi", "voice": "en"}, headers={"X-Cache-Tags": header}
            )
            check(response, case, "/tts X-Cache-Tags", failures)
    assert failures == []


@pytest.mark.usefixtures("no_tracebacks")
def test_hostile_bodies_through_synthesis_routes(hostile_live: LiveApp) -> None:
    failures: list[tuple[str, str, int, str]] = []
    for case, raw in BODIES.items():
        openai = raw.replace(b'"text"', b'"input"')
        for path, body in (("/tts", raw), ("/v1/audio/speech", openai)):
            for content_type in ("application/json", "text/plain"):
                response = hostile_live.client.post(
                    path, content=body, headers={"content-type": content_type}
                )
                check(response, case, f"{path} {content_type}", failures)
                if case == "json-1mb":
                    assert response.status_code == 413
    assert failures == []


def multipart(fields: dict[str, bytes], file: bytes | None = None) -> tuple[bytes, str]:
    """A multipart body built by hand, so field values can be any bytes at all."""
    boundary = "hostile-boundary-7f3a"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    if file is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


@pytest.mark.usefixtures("no_tracebacks")
def test_hostile_input_through_voice_routes(hostile_live: LiveApp) -> None:
    client = hostile_live.client
    failures: list[tuple[str, str, int, str]] = []
    sample = voice_like()
    made = client.post("/v1/voices", data={"name": "target"}, files={"file": ("s.wav", sample)})
    assert made.status_code == 201, made.text
    voice_id = made.json()["id"]
    for case, value in STRINGS.items():
        raw = value.encode("utf-8", "surrogatepass")
        for field in ("name", "base_voice", "public"):
            fields = {"name": b"ok", field: raw}
            body, boundary = multipart(fields, sample)
            content_type = f"multipart/form-data; boundary={boundary}"
            response = client.post(
                "/v1/voices", content=body, headers={"content-type": content_type}
            )
            check(response, case, f"POST /v1/voices {field}", failures)
            response = client.put(
                f"/v1/voices/{voice_id}", content=body, headers={"content-type": content_type}
            )
            check(response, case, f"PUT /v1/voices {field}", failures)
        quoted = quote(raw, safe="")
        # (A path over the header limit is a 431 before any route: test_header_limit.py.)
        for method in ("GET", "PUT", "DELETE") if len(quoted) < 8000 else ():
            check(client.request(method, f"/v1/voices/{quoted}"), case, f"{method} id", failures)
        body, boundary = multipart({"name": b"x"}, raw)  # the string as the audio file
        response = client.post(
            "/v1/voices", content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )  # fmt: skip
        check(response, case, "POST /v1/voices file", failures)
    for case, raw in BODIES.items():
        for content_type in ("multipart/form-data; boundary=x", "multipart/form-data",
                             "application/json"):  # fmt: skip
            response = client.post(
                "/v1/voices", content=raw, headers={"content-type": content_type}
            )
            check(response, case, f"POST /v1/voices {content_type}", failures)
    assert failures == []
    assert client.get(f"/v1/voices/{voice_id}").status_code == 200


@pytest.mark.usefixtures("no_tracebacks")
def test_hostile_strings_through_the_cli(settings: Settings, tmp_path: Path) -> None:
    """In process (any string, NUL included, can be an argument there), then a few as raw
    bytes through a real process (undecodable and overlong UTF-8 in argv)."""
    failures = []
    out = str(tmp_path / "out.wav")
    env = {"VOICECACHE_DATA_DIR": str(settings.data_dir)}
    for case, value in STRINGS.items():
        for args in (["say", value, "-o", out], ["key", value], ["key", "hi", "--voice", value],
                     ["say", "hi", "-o", out, "--emotion", value]):  # fmt: skip
            result = CliRunner().invoke(cli_app, args, env=env)
            crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
            if crashed or result.exit_code not in (0, 1, 2) or "Traceback" in result.output:
                failures.append((case, args[0], result.exit_code, repr(result.exception)))
            elif result.exit_code != 0 and result.stderr.strip().count("\n") != 0:
                failures.append((case, args[0], result.exit_code, result.stderr[:200]))
    raw_args = [b"hi \xc0\xaf", b"\xed\xa0\x80", b"\xff\xfe", "\u202eok".encode(), b"a\xc0\x80"]
    for raw in raw_args:
        for args in ([b"say", raw, b"-o", out.encode()], [b"key", raw]):
            process = subprocess.run(
                [sys.executable.encode(), b"-m", b"voicecache", *args],
                capture_output=True, env={**os.environ, **env}, timeout=60,
            )  # fmt: skip
            stderr = process.stderr.decode(errors="replace")
            if process.returncode not in (0, 1, 2) or "Traceback" in stderr:
                failures.append((repr(raw), args[0].decode(), process.returncode, stderr[-300:]))
    assert failures == []
