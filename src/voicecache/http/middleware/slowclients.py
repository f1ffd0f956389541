"""Deadlines and size limits for slow or hostile clients, cheap enough for the hit path.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but waits forever for a new
connection's first request and for headers that arrive a byte at a time (slowloris), so a few
hundred slow clients could hold every connection slot. `HeaderDeadlineProtocol` is uvicorn's
own httptools protocol with one addition: a connection must deliver complete request headers
within `header_timeout` seconds of connecting (or of a request's first byte), else it is
closed. Bodies have their own deadline in `security.SecurityMiddleware` (408).

A timer per request (`loop.call_later`, `asyncio.timeout`) costs more than the rest of a
memory hit's bookkeeping, so `Deadlines` keeps no timer per waiter: waiters register a
deadline in a dict, and one sweeper task per event loop, running only while there are
waiters, expires overdue ones every `tick` seconds. Deadlines are therefore coarse (up to one
tick late), which is all a slow-client limit needs.

The same protocol caps the request line plus headers at `max_header_bytes` (default 16 KiB,
`VOICECACHE_MAX_HEADER_BYTES`): bytes are counted in `data_received` before they reach the
parser, so an oversized head is never buffered; the client gets 431 and the connection closes.
The limit reaches the protocol through the ASGI lifespan state (`HEADER_LIMIT_STATE`, put
there by the security middleware at start-up), so each server has its own.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Deadlines:
    """Coarse deadlines for many waiters on one event loop, with no timer per waiter."""

    def __init__(self, tick: float = 0.25) -> None:
        self.tick = tick
        self._waiting: dict[Any, tuple[float, Callable[[Any], None]]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, owner: Any, timeout: float, expire: Callable[[Any], None]) -> None:
        """Call `expire(owner)` if `owner` is still registered `timeout` seconds from now."""
        loop = asyncio.get_running_loop()
        self._waiting[owner] = (loop.time() + timeout, expire)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    def discard(self, owner: Any) -> None:
        self._waiting.pop(owner, None)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                await asyncio.sleep(self.tick)
                now = loop.time()
                overdue = [owner for owner, (at, _) in self._waiting.items() if at <= now]
                for owner in overdue:
                    _, expire = self._waiting.pop(owner)
                    expire(owner)
        finally:
            self._sweeper = None


# One registry per event loop: the protocol class is shared by every server in the process.
_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def deadlines_for(loop: asyncio.AbstractEventLoop) -> Deadlines:
    found = _PER_LOOP.get(loop)
    if found is None:
        found = _PER_LOOP[loop] = Deadlines()
    return found


# The lifespan-state key under which an app tells the protocol its header limit.
HEADER_LIMIT_STATE = "voicecache.max_header_bytes"
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
_END_OF_HEAD = b"\r\n\r\n"
_LINGER_SECONDS = 2.0  # after a 431, how long the rest of the client's upload is discarded


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers arrive too slowly or
    are too large."""

    # Set from `client_timeout` by `serving.app_from_environment` before serving starts.
    header_timeout: float = 30.0
    _head_limit = DEFAULT_MAX_HEADER_BYTES
    _head_bytes = 0  # bytes of the current request's head so far
    _in_head = True  # whether the next bytes belong to a request's head
    _refused = False  # answered 431: nothing more is parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadlines = deadlines_for(self.loop)  # looked up once: it is on every request's path
        self._head_limit = self.app_state.get(HEADER_LIMIT_STATE, DEFAULT_MAX_HEADER_BYTES)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered 431: discard what is still arriving until the connection closes
        if self._in_head:
            # Count up to the end of the head: a body in the same packet is not header bytes.
            # (A terminator split across packets over-counts by at most 3 bytes.)
            end = data.find(_END_OF_HEAD)
            self._head_bytes += len(data) if end < 0 else end + len(_END_OF_HEAD)
            if self._head_bytes > self._head_limit:
                self._refuse_head()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._end_of_head()
        super().on_headers_complete()

    def _end_of_head(self) -> None:
        self._deadlines.discard(self)
        self._in_head = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._expect_head()

    def _expect_head(self) -> None:
        # What follows is the next request's head. (Pipelined bytes that arrived in the same
        # packet as this request's end go uncounted: at most one read, a bounded amount.)
        self._in_head = True
        self._head_bytes = 0

    def _refuse_head(self) -> None:
        """Answer 431, stop reading requests, and close: first the sending side, so the
        client reads the answer instead of a reset, then, after a short linger, the socket."""
        self._refused = True
        self._deadlines.discard(self)
        body = json.dumps(
            {"detail": f"request line and headers are over the limit of {self._head_limit} bytes"}
        ).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(head + body)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timeout applies; ours rearms on the next byte.
        self._deadlines.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadlines.discard(self)
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadlines.add(self, self.header_timeout, self._expired)

    def _expired(self, _: object) -> None:
        if not self.transport.is_closing():
            self.transport.close()
