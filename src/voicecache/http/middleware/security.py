"""The security middleware: the first thing every HTTP request meets.

In this order, before any routing or body parsing (and before the fast lane, which it wraps):

1. authentication and scope (`Authenticator.check_scope`, from the process's `Services`):
   401 / 403;
2. the per-key request rate (`ratelimit.RateLimits.request`): 429 with `Retry-After`;
3. the body: at most `max_body_bytes` (uploads to `/v1/voices`: `max_upload_bytes` plus room
   for the multipart envelope), refused from `Content-Length` before reading, and counted while
   reading chunked bodies: 413. The whole body must arrive within `client_timeout` seconds,
   or the request ends with 408, so a slow client cannot hold a worker.

Audio answered to a caller with an API key leaves as `Cache-Control: private` unless
`public_audio` is set (`responses.keep_private`).

Then it records the caller in `scope["state"]` (`principal`, `tenant`: `request.state.tenant`
in routes) and in `auth.current_principal` (for the characters-per-minute limit charged on
misses), and hands the request on with its body replayed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicecache.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, VoicecacheError
from voicecache.http.errors import send_error
from voicecache.http.middleware.slowclients import (
    DEFAULT_MAX_HEADER_BYTES,
    HEADER_LIMIT_STATE,
    Deadlines,
    deadlines_for,
)
from voicecache.http.responses import keep_private
from voicecache.http.state import services_of
from voicecache.security.auth import (
    current_principal,
    required_scope,
)

_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_UPLOAD_METHODS = frozenset({"POST", "PUT"})
UPLOAD_ENVELOPE_BYTES = 64 * 1024  # form fields and part headers around an uploaded file


class SecurityMiddleware:
    """ASGI middleware: authentication, rate limits, body limits; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        client_timeout: float,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        public_audio: bool = False,
    ) -> None:
        self.app = app
        self.public_audio = public_audio
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes + UPLOAD_ENVELOPE_BYTES
        self.client_timeout = client_timeout
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines = Deadlines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and isinstance(scope.get("state"), dict):
                # The server's protocol reads its header limit from the lifespan state.
                scope["state"][HEADER_LIMIT_STATE] = self.max_header_bytes
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            needed = required_scope(method, path)
            services = services_of(scope)
            principal = services.authenticator.check_scope(needed, _header(scope, b"authorization"))
            limits = services.rate_limits
            if limits is not None and needed is not None:
                client = scope.get("client")
                await limits.request(principal, client[0] if client else None)
            replay = await self._read_body(scope, receive, method, path)
        except VoicecacheError as exc:
            await send_error(scope, send, exc)
            return
        if replay is None:
            return  # the client went away while sending its body
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["tenant"] = principal.tenant
        token = current_principal.set(principal)
        if principal.key_id is not None and not self.public_audio:
            send = keep_private(send)
        try:
            await self.app(scope, replay, send)
        finally:
            current_principal.reset(token)

    async def _read_body(
        self, scope: Scope, receive: Receive, method: str, path: str
    ) -> Receive | None:
        limit = self.max_body_bytes
        if method in _UPLOAD_METHODS and (path == "/v1/voices" or path.startswith("/v1/voices/")):
            limit = self.max_upload_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidRequest("malformed Content-Length header")
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
            if int(declared) == 0:
                return receive
        elif method in _BODYLESS and _header(scope, b"transfer-encoding") is None:
            return receive
        # A coarse deadline without a timer per request (see slowclients.Deadlines): an
        # overdue read is cancelled by the loop's sweeper and answered with 408.
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._deadlines = loop, deadlines_for(loop)
        deadlines = self._deadlines
        deadlines.add(task, self.client_timeout, self._expire)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise RequestTimeout(
                f"request body not received within {self.client_timeout:g} s"
            ) from None
        finally:
            deadlines.discard(task)
        return _replay(b"".join(chunks), receive)

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired.add(task)
        task.cancel()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as usual

    return replay
