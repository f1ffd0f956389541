"""A deadline for request headers, which uvicorn does not have.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but waits forever for a new
connection's first request and for headers that arrive a byte at a time (slowloris), so a few
hundred slow clients could hold every connection slot. This protocol is uvicorn's own
httptools protocol with one addition: a connection must deliver complete request headers
within `header_timeout` seconds of connecting (or of a request's first byte), else it is closed.

Bodies have their own deadline in `security.SecurityMiddleware` (`client_timeout`, 408).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers arrive too slowly."""

    # Set from `client_timeout` by `serving.configure_protocol` before serving starts.
    header_timeout: float = 30.0

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timeout applies; ours rearms on the next byte.
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
