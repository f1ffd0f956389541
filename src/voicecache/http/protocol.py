"""The HTTP protocol `voicecache serve` runs: uvicorn's httptools protocol with slow-client
limits (`HeaderDeadlineProtocol`) and the fast lane's protocol half (`WireHits`).

Most requests on a keep-alive connection arrive whole, one per read. When the parser holds
nothing and nothing is in flight, such a read is offered to `WireHits.read` before httptools
sees it (`http/wirerequest.py` takes only plain requests, and only ones httptools would
parse the same way): a lane answer then costs no parser callbacks and no ASGI scope. A read
the lane does not answer goes to httptools as usual. A plain request whose audio is not in
memory is looked up in the tiers below (`WireHits.answer_cold`) with reading paused, so
nothing behind it is answered first; a miss is then parsed and goes through ASGI.

Otherwise a request whose head `WireHits.kind` accepts is held back from ASGI while the rest
of the bytes of the same read are parsed. If its body is complete by then (a GET has none; a speech
POST is at most `FastLane.MEMO_MAX_BODY` bytes, declared up front), `WireHits.answer` either
writes the whole response or declines. A declined request, or one whose body is still
arriving at the end of the read, is handed to uvicorn exactly as it would have been at the
end of its head: slow bodies meet the security middleware's deadline (408) as always.

A request is only offered when nothing else is in flight on the connection (no ASGI response
pending, no pipelined request queued, the transport accepting writes), so responses stay in
request order and a client that does not read cannot make the lane buffer more than one
response. What uvicorn does when a response completes (keep-alive timer, resumed reads, the
`--limit-max-requests` count) runs after a lane answer too: `on_response_complete`.

A lane answer's body of 16 KiB or more goes out with `sendfile` from a memory-backed copy
(`http/bodyfiles.py`) once the head has left, as nginx sends files; what the socket does not
take at once is queued in the transport from memory. TLS connections always write from memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol
from voicecache.http.middleware.wirehits import NOT_OURS, WIRE_HITS_STATE, Admitted, WireHits
from voicecache.http.wirerequest import WholeRequest

log = logging.getLogger(__name__)


class GatewayProtocol(HeaderDeadlineProtocol):
    """uvicorn's httptools protocol with slow-client limits and cache hits answered here."""

    _wire: WireHits | None = None
    _socket: int | None = None  # the connection's descriptor, for `sendfile` (plain TCP only)
    _held: bytearray | None = None  # the body so far of a request offered to the lane
    _kind = NOT_OURS
    _arrived = 0.0
    _between_requests = True  # the parser holds no part of a request
    _idle_since = 0.0  # loop time of the last answer to a request read whole
    _cold = False  # a request read whole is being answered from below memory (`_answer_cold`)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._backlog: list[bytes] = []  # reads that arrived during a cold lookup
        self._wire = self.app_state.get(WIRE_HITS_STATE)
        sock = transport.get_extra_info("socket")
        if sock is not None and self.scheme == "http":
            self._socket = sock.fileno()

    def data_received(self, data: bytes) -> None:
        if self._cold:
            # Reads are paused while a cold answer is looked up; what was already on its way
            # waits for it (a read or so: bounded by the pause).
            self._backlog.append(data)
            return
        wire = self._wire
        if (
            wire is not None
            and self._between_requests
            and not self._refused
            and not self.root_path
            and self._idle()
        ):
            whole = wire.read(data, self._head_limit)
            if whole is not None and self._answer_whole(wire, *whole, data):
                return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed `data` to httptools, as uvicorn does, and hand a request held for the lane
        whose body is still arriving over to uvicorn."""
        super().data_received(data)
        if self._held is not None:  # the body did not arrive with the head: not ours
            if self.transport.is_closing():
                self._held = None
            else:
                self._hand_over()

    def on_message_begin(self) -> None:
        self._between_requests = False
        super().on_message_begin()
        # A lane answer armed the keep-alive timer (`on_response_complete`) in the middle of a
        # read; a request pipelined behind it in the same read must not run under it.
        self._unset_keepalive_if_required()

    def on_headers_complete(self) -> None:
        wire = self._wire
        if wire is not None and self._idle():
            kind = wire.kind(self.parser.get_method(), self.url, self.headers)
            if (
                kind != NOT_OURS
                and self.parser.get_http_version() == "1.1"
                and self.parser.should_keep_alive()
                and not self.root_path
            ):
                self._end_of_head()
                self._kind = kind
                self._held = bytearray()
                self._arrived = time.perf_counter()
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._held is not None:
            self._held += body  # bounded: the parser stops at the declared Content-Length
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._between_requests = True
        held = self._held
        if held is None:
            super().on_message_complete()
            return
        wire = self._wire
        assert wire is not None
        answer = wire.answer(
            self._kind,
            self.url,
            self.headers,
            bytes(held),
            self._arrived,
            self.server_state.default_headers,
            self._send,
        )
        if answer is True:  # (a memory miss goes to ASGI from here: it may be pipelined)
            self._held = None
            self._expect_head()
            self.on_response_complete()
            return
        self._hand_over()
        super().on_message_complete()

    def _answer_whole(self, wire: WireHits, kind: int, request: WholeRequest, data: bytes) -> bool:
        """Answer a request that arrived whole in one read (`WireHits.read`) without the
        parser, as `on_message_complete` would have, or start answering it from the tiers
        below memory (`_answer_cold`); False if the parser must see it now."""
        arrived = time.perf_counter()
        answer = wire.answer(
            kind,
            request.url,
            request.headers,
            request.body,
            arrived,
            self.server_state.default_headers,
            self._send,
        )
        if answer is False:
            return False
        if answer is True:
            self._whole_answered()
            return True
        # Nothing else is read from this connection until the cold lookup is done, so the
        # answers stay in order and the lane holds at most this one request.
        self._cold = True
        self.flow.pause_reading()
        task = self.loop.create_task(self._answer_cold(wire, answer, request, data, arrived))
        self.tasks.add(task)  # uvicorn's graceful shutdown waits for it, as for ASGI requests
        task.add_done_callback(self.tasks.discard)
        return True

    async def _answer_cold(
        self, wire: WireHits, admitted: Admitted, request: WholeRequest, data: bytes, arrived: float
    ) -> None:
        """A cold hit (disk, Redis, S3) answered in the lane; a miss or a tenant's audio is
        parsed by httptools and goes through ASGI as if it had just arrived."""
        defaults = self.server_state.default_headers
        try:
            answered = await wire.answer_cold(
                admitted, request.headers, arrived, defaults, self._send
            )
        except Exception:  # the slow path meets the same failure and answers it properly
            log.warning("protocol lane: cold lookup of %s failed", admitted.entry_id, exc_info=True)
            answered = False
        finally:
            self._cold = False
        backlog, self._backlog = self._backlog, []
        if self.transport.is_closing():
            return
        self.flow.resume_reading()  # first: the parser may pause reading again (pipelining)
        if answered:
            self._whole_answered()
        else:
            self._parse(data)
        for chunk in backlog:
            self.data_received(chunk)

    def _whole_answered(self) -> None:
        """`on_response_complete` for `_answer_whole`, but the keep-alive timer, once armed,
        stays armed for a whole run of such answers and is moved on when it fires
        (`timeout_keep_alive_handler`): arming and cancelling a timer per request costs more
        than the rest of this bookkeeping."""
        self.server_state.total_requests += 1
        self._deadlines.discard(self)  # the first request's head deadline (`connection_made`)
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        """A keep-alive timer fired, armed by uvicorn or by `_whole_answered`: close the
        connection if it has been idle that long since the last answer, else look again when
        it will have been."""
        self.timeout_keep_alive_task = None
        if self._cold:  # a request is being answered: not idle
            self._idle_since = self.loop.time()
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def _send(self, head: bytes, body: bytes, file: int | None) -> None:
        """Write a lane answer: the body from `file` with `sendfile` when the head has left
        (so nothing queued in the transport can be overtaken), else from memory."""
        transport = self.transport
        if transport.is_closing():
            return  # the client went away while a cold answer was looked up
        if file is None or self._socket is None:
            transport.writelines([head, body])
            return
        transport.write(head)
        if transport.get_write_buffer_size():
            transport.write(body)
            return
        bodies = self._wire.bodies if self._wire is not None else None
        size = len(body)
        sent = 0
        try:
            while sent < size:
                written = os.sendfile(self._socket, file, sent, size - sent)
                if written == 0:
                    break
                sent += written
        except BlockingIOError:
            pass  # the socket is full: the transport queues the rest
        except OSError:
            transport.close()  # the client went away
            return
        if sent < size:
            transport.write(memoryview(body)[sent:])
            if bodies is not None:
                bodies.sent_partly += 1
        elif bodies is not None:
            bodies.sent_whole += 1

    def _hand_over(self) -> None:
        """Give the held request to uvicorn as if its head had just completed."""
        held, self._held = self._held, None
        HttpToolsProtocol.on_headers_complete(self)  # the head deadline is already off
        if held:
            HttpToolsProtocol.on_body(self, bytes(held))

    def _idle(self) -> bool:
        """Nothing in flight on this connection, and the transport is taking writes."""
        cycle = self.cycle
        return (
            (cycle is None or cycle.response_complete)
            and not self._cold
            and not self.pipeline
            and not self.flow.write_paused
            and not self.transport.is_closing()
        )
