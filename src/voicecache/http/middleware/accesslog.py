"""One log line per HTTP request: request id, key prefix, result, tier, engine, latency.

`VOICECACHE_LOG_FORMAT=json` writes JSON lines (one object per line, for log shippers);
`text` writes the same fields as `name=value` pairs. Lines go to stderr. They are INFO-level
lines: `VOICECACHE_LOG_LEVEL=warning` (or higher) turns them off, as does
`VOICECACHE_ACCESS_LOG=false`.

`AccessLogMiddleware` is the outermost ASGI layer, so it times and logs every request, the
fast lane's included. Audio responses say what they served by leaving their `SpeechResult`
in the ASGI scope under `RESULT_SCOPE_KEY` (`note_result`): a dict store, so the hit path
pays nothing for it. The request id is the client's `X-Request-ID` when it sends a sane one,
else a fresh one; it is echoed in the response's `X-Request-ID`.

No field can forge a line or reach a terminal raw: in text lines every character outside
printable ASCII, and the separators space, `=`, `"` and `\\`, become `\\xNN`/`\\uNNNN`
escapes; JSON lines are pure ASCII (`\\uNNNN` for the rest, DEL included).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
import time
from typing import Literal, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicecache.http.responses import ARRIVED_SCOPE_KEY, RESULT_SCOPE_KEY
from voicecache.model import SpeechResult
from voicecache.settings import Settings

KEY_PREFIX = 12
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def access_log_enabled(settings: Settings) -> bool:
    """Whether `settings` ask for access log lines (on, and a log level of INFO or lower)."""
    return settings.access_log and settings.log_level.strip().lower() in ("trace", "debug", "info")


class AccessLog:
    """Formats access log lines and writes them to a text stream (stderr by default).

    Lines are written directly rather than through `logging`: a log record costs several
    times what a fast-lane hit costs, and this runs once per request. The timestamp prefix
    is formatted once per second, and JSON is assembled by hand; every field goes through
    `_text` or `_json`, which return plain values unchanged after one regex match."""

    def __init__(self, fmt: Literal["text", "json"] = "text", stream: TextIO | None = None):
        self.json = fmt == "json"
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self._second = -1
        self._prefix = ""

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"

    def line(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        result: SpeechResult | None = None,
    ) -> str:
        """One log line (no trailing newline)."""
        ms = f"{seconds * 1000:.3f}"
        if self.json:
            if result is None:
                served = '"result":null,"key":null,"tier":null,"engine":null'
            else:
                served = (
                    f'"result":{_json(result.status)},"key":{_json(result.key[:KEY_PREFIX])},'
                    f'"tier":{_json(result.tier)},"engine":{_json(result.meta.engine)}'
                )
            return (
                f'{{"ts":"{self._timestamp()}","request_id":{_json(request_id)},'
                f'"method":{_json(method)},"path":{_json(path)},"status":{status},{served},'
                f'"ms":{ms}}}'
            )
        if result is None:
            served = "result=- key=- tier=- engine=-"
        else:
            served = (
                f"result={_text(result.status)} key={_text(result.key[:KEY_PREFIX])} "
                f"tier={_text(result.tier or '-')} engine={_text(result.meta.engine or '-')}"
            )
        return (
            f"ts={self._timestamp()} request_id={_text(request_id)} method={_text(method)} "
            f"path={_text(path)} status={status} {served} ms={ms}"
        )

    def emit(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        result: SpeechResult | None = None,
    ) -> None:
        """Write one line; a failing stream never fails the request."""
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(self.line(request_id, method, path, status, seconds, result) + "\n")


# Printable ASCII but the text format's separators (space, `=`) and quote/escape characters.
_TEXT_PLAIN = re.compile(r"[!#-<>-\[\]-~]*")
_TEXT_UNSAFE = re.compile(r"[^!#-<>-\[\]-~]")
# What JSON may carry as is: printable ASCII (`json.dumps` escapes `"` and `\` itself).
_JSON_PLAIN = re.compile(r"[ -~]*")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _text(value: str) -> str:
    """`value` for a text line: unchanged when plain, else with escapes (see the docstring)."""
    if _TEXT_PLAIN.fullmatch(value):
        return value
    return _TEXT_UNSAFE.sub(_escape, value)


def _json(value: str | None) -> str:
    """`value` as a pure-ASCII JSON string (or null)."""
    if value is None:
        return "null"
    if value.isalnum() and value.isascii():  # the common case (names, statuses): no escaping
        return f'"{value}"'
    encoded = json.dumps(value)  # ensure_ascii: every non-ASCII character as \uNNNN
    return encoded if _JSON_PLAIN.fullmatch(encoded) else encoded.replace("\x7f", "\\u007f")


# New request ids: a random per-process prefix and a counter (unique without a syscall).
_PREFIX = os.urandom(4).hex()
_counter = itertools.count(1)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is sane, else a new unique id."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return f"{_PREFIX}{next(_counter):08x}"


class AccessLogMiddleware:
    """ASGI middleware: times each HTTP request and writes its access log line."""

    def __init__(self, app: ASGIApp, access_log: AccessLog) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope[ARRIVED_SCOPE_KEY] = started
        request_id = request_id_from(scope["headers"])
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.access_log.emit(
                request_id,
                scope["method"],
                scope["path"],
                status,
                time.perf_counter() - started,
                scope.get(RESULT_SCOPE_KEY),
            )
