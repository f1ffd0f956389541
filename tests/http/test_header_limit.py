"""Request line plus headers are capped (`VOICECACHE_MAX_HEADER_BYTES`, default 16 KiB): 431,
then the connection closes (issue #12 item 3). Over a real socket, against uvicorn with the
protocol class `voicecache serve` uses."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import UvicornThread
from voicecache.http.app import create_app
from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol
from voicecache.settings import Settings

MiB = 1024 * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, int]]:
    app = create_app(settings)
    with UvicornThread(app, lifespan="on", http=HeaderDeadlineProtocol) as running:
        host, port = running.url.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(address: tuple[str, int], head: bytes, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send `head` (as much as the server takes), then read the answer; returns it and
    whether the server closed the connection."""
    with socket.create_connection(address, timeout=wait) as conn:
        view = memoryview(head)
        try:
            while view:
                sent = conn.send(view[: 256 * 1024])
                view = view[sent:]
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionResetError:
            return received, True
        except TimeoutError:
            return received, False
        return received, True


def read_response(conn: socket.socket) -> bytes:
    """One whole response (head and a `content-length` body) from a keep-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_an_8_mib_header_gets_431_and_a_closed_connection(server: tuple[str, int]) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (8 * MiB) + b"\r\n\r\n"
    before = rss()
    answer, closed = exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"detail"' in answer and b"16384" in answer
    assert closed
    assert rss() - before < 4 * MiB  # the header was never buffered


def test_many_headers_count_together_and_small_ones_pass(server: tuple[str, int]) -> None:
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(200))  # ~21 KB
    answer, closed = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and closed
    long_line = b"GET /healthz?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer, _ = exchange(server, long_line)
    assert answer.startswith(b"HTTP/1.1 431 ")

    fine = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"c" * 12_000 + b"\r\n\r\n"
    with socket.create_connection(server, timeout=10) as conn:
        for _ in range(3):  # keep-alive: every request gets its own allowance
            conn.sendall(fine)
            reply = read_response(conn)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


def test_headers_sent_a_byte_at_a_time_are_counted(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        started = time.monotonic()
        answer = b""
        try:
            for _ in range(40):
                conn.sendall(b"d" * 1000)
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert time.monotonic() - started < 5


def test_the_limit_is_a_setting(settings: Settings) -> None:
    app = create_app(Settings(data_dir=settings.data_dir, max_header_bytes="2KiB"))
    with UvicornThread(app, lifespan="on", http=HeaderDeadlineProtocol) as running:
        host, port = running.url.removeprefix("http://").split(":")
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"e" * 3000 + b"\r\n\r\n"
        answer, _ = exchange((host, int(port)), head)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"2048" in answer
