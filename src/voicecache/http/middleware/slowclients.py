"""Deadlines for slow clients, cheap enough for the hit path.

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
"""

from __future__ import annotations

import asyncio
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


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers arrive too slowly."""

    # Set from `client_timeout` by `serving.app_from_environment` before serving starts.
    header_timeout: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        deadlines_for(self.loop).discard(self)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timeout applies; ours rearms on the next byte.
        deadlines_for(self.loop).discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        deadlines_for(self.loop).discard(self)
        super().connection_lost(exc)

    def _arm(self) -> None:
        deadlines_for(self.loop).add(self, self.header_timeout, self._expired)

    def _expired(self, _: object) -> None:
        if not self.transport.is_closing():
            self.transport.close()
