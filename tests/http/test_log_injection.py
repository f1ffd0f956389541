"""Access log lines cannot be forged or carry terminal escapes (issue #12 item 10): control
characters and separators in every logged field are escaped, in text and JSON format."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from tests.conftest import LiveApp
from tests.http.test_accesslog import capture, logged
from voicecache.http.middleware.accesslog import AccessLog
from voicecache.settings import Settings

# Raw request targets: the server percent-decodes the path before the log sees it.
HOSTILE_PATHS = [
    "/x%0Ats=2026-01-01T00:00:00.000Z%20request_id=forged%20method=GET%20path=/admin%20status=200",
    "/x%1b%5b31mred%1b%5b0m",
    "/x%0d%0a%0d%0aHTTP/1.1%20200",
    "/x%20status=200%20result=HIT",
    "/x%22%5c%7f%c2%85%c2%9b%e2%80%a8%e2%80%ae",
    "/x%00nul",
]
UNSAFE = {chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0x202E]}


def send_raw(live: LiveApp, target: str) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while conn.recv(65536):
            pass


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_hostile_paths_make_one_clean_line_each(
    serve: Callable[..., LiveApp], settings: Settings, fmt: str
) -> None:
    live = serve(settings.model_copy(update={"log_format": fmt}))
    captured = capture(live)
    for target in HOSTILE_PATHS:
        send_raw(live, target)
    lines = logged(captured, len(HOSTILE_PATHS))
    assert len(captured.getvalue().splitlines()) == len(HOSTILE_PATHS), captured.getvalue()
    for line in lines:
        assert not UNSAFE & set(line), repr(line)
        if fmt == "json":
            record = json.loads(line)
            assert record["status"] == 404 and record["path"].startswith("/x")
            assert line.isascii()
        else:
            fields = [part.partition("=")[0] for part in line.split(" ")]
            assert fields == [
                "ts", "request_id", "method", "path", "status", "result", "key", "tier",
                "engine", "ms",
            ]  # fmt: skip
            assert "status=404 " in line
            assert "forged" not in line.split(" ")[1]  # the request id is the server's


def test_text_escapes_are_unambiguous() -> None:
    log = AccessLog("text")
    line = log.line(request_id="r", method="GET", path='/a b=c"d\\e\n', status=200, seconds=0)
    assert " path=/a\\x20b\\x3dc\\x22d\\x5ce\\x0a status=200 " in line
    plain = log.line(request_id="r", method="GET", path="/v1/audio/ab.wav", status=200, seconds=0)
    assert " path=/v1/audio/ab.wav " in plain


def test_json_escapes_what_json_leaves_raw() -> None:
    line = AccessLog("json").line(
        request_id="r", method="GET", path="/\x7f\x9b\u2028\u202e你", status=200, seconds=0
    )
    assert line.isascii()
    assert json.loads(line)["path"] == "/\x7f\x9b\u2028\u202e你"
