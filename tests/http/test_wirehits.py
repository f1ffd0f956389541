"""The fast lane's protocol half (`http/protocol.py`, `wirehits.py`) writes the same bytes as
the ASGI path, answers only plain memory hits, and keeps HTTP/1.1 semantics on the
connection (order, keep-alive, slow bodies).

Parity: the same app is served twice over one data directory, once with `GatewayProtocol`
(the protocol `voicecache serve` runs) and once with `HeaderDeadlineProtocol` (no protocol
lane: every request goes through ASGI), both reading one frozen clock. Every request is sent
as raw bytes in one write, so the lane sees it whole, and both answers must be byte for byte
the same but for the `date` header; the lane's counter says which requests it answered.
Most are read whole, without the parser (`http/wirerequest.py`); one is not, and the lane
answers it once httptools has parsed it.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import LiveApp
from tests.http.test_fastlane import two_tenants
from tests.http.test_fastlane_parity import fast_lane_of
from tests.security.test_auth import bearer, speak, upload, wait_for
from tests.servers import UvicornThread
from voicecache import bootstrap
from voicecache.cache.tiers import DiskTier
from voicecache.http.app import create_app
from voicecache.http.middleware.slowclients import HeaderDeadlineProtocol
from voicecache.http.middleware.wirehits import AUDIO_SCOPE, SPEECH_SCOPES, WireHits
from voicecache.http.protocol import GatewayProtocol
from voicecache.http.state import services_of
from voicecache.security.auth import required_scope
from voicecache.settings import Settings

LINE = {"text": "Straight from the wire.", "voice": "en"}
BODY = json.dumps(LINE).encode()
OPENAI = json.dumps({"model": "tts-1", "input": "Straight from the wire.", "voice": "en"}).encode()


def host_port(live: LiveApp) -> tuple[str, int]:
    host, port = live.url.removeprefix("http://").split(":")
    return host, int(port)


def request(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    """One raw HTTP request; `Content-Length` is added for a body unless a header sets the
    framing itself."""
    lines = [f"{method} {target} HTTP/{version}", "Host: test", "X-Request-ID: parity-1"]
    fields = dict(headers or {})
    if body and "Transfer-Encoding" not in fields:
        fields.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(stream: io.BufferedReader, method: str = "GET") -> bytes:
    """One whole response (head and body) from `stream`."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, f"connection closed mid-response: {head!r}"
        head += line
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    status = int(head.split(b" ", 2)[1])
    if method == "HEAD" or status in (204, 304):
        length = 0
    return head + stream.read(length)


def exchange(live: LiveApp, payload: bytes, answers: int = 1, method: str = "GET") -> list[bytes]:
    """Send `payload` in one write on a new connection; read `answers` responses."""
    with socket.create_connection(host_port(live), timeout=10) as conn:
        conn.sendall(payload)
        stream = conn.makefile("rb")
        return [read_response(stream, method) for _ in range(answers)]


def without_date(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def wire_of(live: LiveApp) -> WireHits:
    wire = fast_lane_of(live).wire
    assert wire is not None
    return wire


@dataclass
class Pair:
    wire: LiveApp  # served with GatewayProtocol
    asgi: LiveApp  # served with HeaderDeadlineProtocol: no protocol lane
    acme: str  # token of tenant acme (speak, voices)
    globex: str  # token of tenant globex (speak)


def served_twice(secured: Settings) -> list[LiveApp]:
    """The app served with `GatewayProtocol` and with `HeaderDeadlineProtocol`, over one data
    directory, both reading one frozen clock."""
    lives = []
    for protocol in (GatewayProtocol, HeaderDeadlineProtocol):
        app = create_app(secured, services=bootstrap.build(secured, clock=lambda: 1_000_000.0))
        lives.append(LiveApp(app, UvicornThread(app, lifespan="on", http=protocol).start()))
    return lives


def assert_answered_alike(
    wire_live: LiveApp, asgi_live: LiveApp, cases: list[tuple[bytes, str, bool]]
) -> None:
    """Each raw request gets the same bytes from both (but for `date`), and the protocol lane
    answers exactly the ones marked as its own."""
    wire = wire_of(wire_live)
    mismatches, wrongly_routed = [], []
    for payload, method, ours in cases:
        before = wire.answered
        (a,) = exchange(wire_live, payload, method=method)
        (b,) = exchange(asgi_live, payload, method=method)
        if without_date(a) != without_date(b):
            mismatches.append((payload[:80], a[:600], b[:600]))
        if (wire.answered == before + 1) != ours:
            wrongly_routed.append((payload[:80], ours))
    assert wrongly_routed == []
    assert mismatches == []


@pytest.fixture
def pair(settings: Settings) -> Iterator[Pair]:
    # Popularity off: both apps must see the same TTL left, however many hits each counted.
    secured, acme, globex = two_tenants(settings, popularity_hits=0)
    lives = served_twice(secured)
    try:
        yield Pair(lives[0], lives[1], acme, globex)
    finally:
        for live in lives:
            live.close()


def warm(live: LiveApp, token: str, voice: str = "en") -> str:
    """Make `LINE` (in `voice`) a memory hit on `live`, its speech body remembered by the fast
    lane; returns its key."""
    key = ""

    def in_memory() -> bool:
        nonlocal key
        body = BODY if voice == "en" else json.dumps({**LINE, "voice": voice}).encode()
        headers = {**bearer(token), "content-type": "application/json"}
        answer = live.client.post("/tts", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        key = answer.headers["x-cache-key"]
        return answer.headers.get("x-cache-tier") == "memory"

    wait_for(in_memory)
    live.client.post(
        "/v1/audio/speech",
        content=OPENAI,
        headers={**bearer(token), "content-type": "application/json"},
    )
    return key


def cases(key: str, private_key: str, acme: str, globex: str) -> list[tuple[bytes, str, bool]]:
    """(raw request, method, answered by the protocol lane)."""
    auth = {"Authorization": f"Bearer {acme}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    utf8 = {**auth, "Content-Type": "application/json; charset=utf-8"}
    path = f"/v1/audio/{key}.wav"
    private = f"/v1/audio/{private_key}.wav"
    chunked = {**json_auth, "Transfer-Encoding": "chunked"}
    in_chunks = f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n"
    return [
        (request("GET", path, auth), "GET", True),
        (request("POST", "/tts", json_auth, BODY), "POST", True),
        (request("POST", "/tts", utf8, BODY), "POST", True),
        (request("POST", "/v1/audio/speech", json_auth, OPENAI), "POST", True),
        # Not read whole (trailing whitespace in a value), so parsed by httptools first.
        (request("GET", path, {**auth, "X-Note": "padded  "}), "GET", True),
        # Declined: the ASGI path answers, and must answer the same.
        (request("GET", path), "GET", False),  # no key: 401
        (request("GET", path, {"Authorization": "Bearer nope"}), "GET", False),
        (request("GET", f"/v1/audio/{'0' * 64}.wav", auth), "GET", False),  # a miss: 404
        (request("GET", path + "?x=1", auth), "GET", False),
        (request("GET", path, {**auth, "Range": "bytes=0-9"}), "GET", False),
        (request("GET", path, {**auth, "If-None-Match": f'"{key}.wav"'}), "GET", False),
        (request("GET", path, {**auth, "Cache-Control": "no-cache"}), "GET", False),
        (request("HEAD", path, auth), "HEAD", False),
        (request("GET", path, auth, version="1.0"), "GET", False),
        (request("GET", path, {**auth, "Connection": "close"}), "GET", False),
        (request("GET", private, auth), "GET", False),  # a tenant's audio
        (request("GET", private, {"Authorization": f"Bearer {globex}"}), "GET", False),
        (request("POST", "/tts", {**json_auth, "X-Cache-Tags": "event"}, BODY), "POST", False),
        (request("POST", "/tts", {**auth, "Content-Type": "text/plain"}, BODY), "POST", False),
        (request("POST", "/tts", json_auth, BODY[:-1] + b" }"), "POST", False),  # new body
        (request("POST", "/tts", chunked, in_chunks), "POST", False),
        (request("POST", "/tts", {**json_auth, "Expect": "100-continue"}, BODY), "POST", False),
        (request("POST", "/tts", json_auth, b'{"text": ""}'), "POST", False),  # 422
    ]  # fmt: skip


def test_the_protocol_lane_writes_what_the_asgi_path_writes(pair: Pair) -> None:
    keys = [warm(live, pair.acme) for live in (pair.wire, pair.asgi)]
    assert keys[0] == keys[1]
    voice = upload(pair.wire, pair.acme)
    private_keys = [
        speak(live, pair.acme, voice, LINE["text"]).headers["x-cache-key"]
        for live in (pair.wire, pair.asgi)
    ]
    assert private_keys[0] == private_keys[1]
    raw = cases(keys[0], private_keys[0], pair.acme, pair.globex)
    assert_answered_alike(pair.wire, pair.asgi, raw)


def test_keyed_callers_get_private_audio_and_public_audio_can_allow_sharing(pair: Pair) -> None:
    key = warm(pair.wire, pair.acme)
    (answer,) = exchange(pair.wire, request("GET", f"/v1/audio/{key}.wav", bearer(pair.acme)))
    assert b"\r\ncache-control: private, max-age=" in answer
    assert b"\r\nx-cache-tier: memory\r\n" in answer
    assert b"\r\nx-request-id: parity-1\r\n" in answer


def test_pipelined_requests_are_answered_in_order(pair: Pair) -> None:
    live = pair.wire
    key = warm(live, pair.acme)
    auth = bearer(pair.acme)
    hit = request("GET", f"/v1/audio/{key}.wav", auth)
    miss = request("GET", f"/v1/audio/{'1' * 64}.wav", auth)  # the ASGI path: 404
    speech = request("POST", "/tts", {**auth, "Content-Type": "application/json"}, BODY)
    answers = exchange(live, hit + miss + hit + speech + hit, answers=5)
    statuses = [answer.split(b" ", 2)[1] for answer in answers]
    assert statuses == [b"200", b"404", b"200", b"200", b"200"]
    assert [b"x-cache: HIT" in answer for answer in answers] == [True, False, True, True, True]


def test_a_keep_alive_timer_armed_by_a_lane_answer_spares_the_next_request(
    settings: Settings,
) -> None:
    """A hit and the head of a slow upload in one read: the upload's body comes after the
    keep-alive timeout, and the connection must still be open for it."""
    app = create_app(settings)
    server = UvicornThread(app, lifespan="on", http=GatewayProtocol, timeout_keep_alive=0.3)
    live = LiveApp(app, server.start())
    try:
        key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
        wire = wire_of(live)
        before = wire.answered
        with socket.create_connection(host_port(live), timeout=10) as conn:
            head_only = request("POST", "/tts", {"Content-Type": "application/json"}, BODY)
            conn.sendall(request("GET", f"/v1/audio/{key}.wav") + head_only[: -len(BODY)])
            stream = conn.makefile("rb")
            first = read_response(stream)
            time.sleep(0.8)
            conn.sendall(BODY)
            second = read_response(stream)
        assert wire.answered == before + 1
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
        assert b"x-cache: HIT" in second
    finally:
        live.close()


def test_answers_to_whole_requests_keep_the_connection_alive_until_it_is_idle(
    settings: Settings,
) -> None:
    """One keep-alive timer serves a run of answers to requests read whole, whoever armed it:
    a connection that keeps asking stays open past the timeout, and one that goes quiet is
    closed."""
    app = create_app(settings)
    server = UvicornThread(app, lifespan="on", http=GatewayProtocol, timeout_keep_alive=1.0)
    live = LiveApp(app, server.start())
    try:
        key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
        wait_for(lambda: in_memory(live, key))
        wire = wire_of(live)
        before = wire.answered
        hit = request("GET", f"/v1/audio/{key}.wav")
        # Parsed by httptools first (trailing whitespace), so uvicorn arms its own timer.
        parsed_hit = request("GET", f"/v1/audio/{key}.wav", {"X-Note": "padded  "})
        with socket.create_connection(host_port(live), timeout=10) as conn:
            stream = conn.makefile("rb")
            for n in range(6):  # 1.5 s in all, never near 1 s idle
                conn.sendall(parsed_hit if n == 0 else hit)
                assert read_response(stream).startswith(b"HTTP/1.1 200")
                time.sleep(0.3)
            time.sleep(2.5)  # idle for longer than the timeout
            assert stream.read(1) == b""  # closed by the server
        assert wire.answered == before + 6
    finally:
        live.close()


def test_the_scopes_the_lane_checks_are_the_ones_its_routes_need() -> None:
    for fmt in ("wav", "flac", "mp3", "opus", "pcm"):
        assert required_scope("GET", f"/v1/audio/{'ab' * 32}.{fmt}") == AUDIO_SCOPE
    for path, scope in SPEECH_SCOPES.items():
        assert required_scope("POST", path) == scope
    assert AUDIO_SCOPE is not None and None not in SPEECH_SCOPES.values()


def test_lane_hits_are_counted_and_logged(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    stream = io.StringIO()
    access_log = fast_lane_of(live).access_log
    assert access_log is not None
    access_log.stream = stream
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    wait_for(lambda: in_memory(live, key))
    wire = wire_of(live)
    before_requests = _requests(live, "hit")
    before = wire.answered
    for _ in range(3):
        (answer,) = exchange(live, request("GET", f"/v1/audio/{key}.wav"))
        assert answer.startswith(b"HTTP/1.1 200")
    assert wire.answered == before + 3
    assert _requests(live, "hit") == before_requests + 3
    lines = [line for line in stream.getvalue().splitlines() if "request_id=parity-1" in line]
    assert len(lines) == 3
    assert "method=GET" in lines[0] and "status=200 result=HIT" in lines[0]
    assert "tier=memory engine=espeak" in lines[0]


def test_rate_limits_send_every_request_through_asgi(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings.model_copy(update={"rate_limit_rps": 1.0}))
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    wire = wire_of(live)
    statuses = [
        exchange(live, request("GET", f"/v1/audio/{key}.wav"))[0].split(b" ", 2)[1]
        for _ in range(4)
    ]
    assert b"429" in statuses
    assert wire.answered == 0


def in_memory(live: LiveApp, key: str) -> bool:
    answer = live.client.get(f"/v1/audio/{key}.wav")
    return answer.headers.get("x-cache-tier") == "memory"


def _requests(live: LiveApp, result: str) -> float:
    """`voicecache_requests_total` for `result`, summed over tiers and engines."""
    total = 0.0
    for line in live.client.get("/metrics").text.splitlines():
        if line.startswith("voicecache_requests_total{") and f'result="{result}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_wire_hits_can_be_turned_off(serve: Callable[..., LiveApp], settings: Settings) -> None:
    live = serve(settings.model_copy(update={"wire_hits": False}))
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    wait_for(lambda: in_memory(live, key))
    (answer,) = exchange(live, request("GET", f"/v1/audio/{key}.wav"))
    assert b"\r\nx-cache-tier: memory\r\n" in answer
    assert fast_lane_of(live).wire is None  # the hit went through ASGI


def test_a_request_the_parser_has_begun_is_never_read_whole(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    """The rest of a head that looks like a whole request of its own is still the rest: the
    parser gets it (and refuses a request line among the headers with 400)."""
    live = serve(settings)
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    wait_for(lambda: in_memory(live, key))
    wire = wire_of(live)
    before = wire.answered
    hit = request("GET", f"/v1/audio/{key}.wav")
    with socket.create_connection(host_port(live), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(hit[: hit.index(b"\r\n") + 2])  # the request line alone
        time.sleep(0.3)  # its own read
        conn.sendall(hit)
        answer = read_response(conn.makefile("rb"))
    assert answer.startswith(b"HTTP/1.1 400")
    assert wire.answered == before


def test_cold_hits_are_answered_in_the_lane_with_the_bytes_of_the_asgi_path(
    settings: Settings,
) -> None:
    """Disk hits (no memory tier): the lane answers GET and remembered speech POSTs after
    the tier's own read, and declines misses and tenants' audio, all as the ASGI path does."""
    secured, acme, globex = two_tenants(settings, popularity_hits=0, tiers=["disk"])
    lives = served_twice(secured)
    try:
        wire_live, asgi_live = lives
        json_auth = {**bearer(acme), "Content-Type": "application/json"}
        for live in lives:  # stored on disk, and the speech body remembered by each fast lane
            for _ in range(2):
                answer = live.client.post("/tts", content=BODY, headers=json_auth)
                assert answer.status_code == 200, answer.text
        key = answer.headers["x-cache-key"]
        assert answer.headers["x-cache-tier"] == "disk"
        voice = upload(wire_live, acme)
        private = speak(wire_live, acme, voice, LINE["text"]).headers["x-cache-key"]
        cold_cases = [
            (request("GET", f"/v1/audio/{key}.wav", bearer(acme)), "GET", True),
            (request("POST", "/tts", json_auth, BODY), "POST", True),
            (request("GET", f"/v1/audio/{key}.wav"), "GET", False),  # 401
            (request("GET", f"/v1/audio/{'0' * 64}.wav", bearer(acme)), "GET", False),  # 404
            (request("GET", f"/v1/audio/{private}.wav", bearer(acme)), "GET", False),
            (request("GET", f"/v1/audio/{private}.wav", bearer(globex)), "GET", False),
        ]
        assert_answered_alike(wire_live, asgi_live, cold_cases)
    finally:
        for live in lives:
            live.close()


def test_requests_sent_during_a_cold_lookup_are_answered_after_it_in_order(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings.model_copy(update={"tiers": ["disk"]}))
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    hit = request("GET", f"/v1/audio/{key}.wav")
    miss = request("GET", f"/v1/audio/{'2' * 64}.wav")  # the ASGI path: 404
    with socket.create_connection(host_port(live), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = conn.makefile("rb")
        statuses = []
        for _ in range(20):
            conn.sendall(hit)
            conn.sendall(miss)  # most often while the hit is still being looked up
            conn.sendall(hit)
            statuses += [read_response(stream).split(b" ", 2)[1] for _ in range(3)]
    # However the reads fall (one request each, or several, parsed), the order holds; the
    # lane's part is pinned down by test_nothing_behind_a_cold_lookup_is_answered_before_it.
    assert statuses == [b"200", b"404", b"200"] * 20


def test_nothing_behind_a_cold_lookup_is_answered_before_it(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    """The disk tier's read threads are kept busy, so the hit's lookup waits: the request
    behind it must wait too, though the ASGI path could answer it at once."""
    live = serve(settings.model_copy(update={"tiers": ["disk"]}))
    key = live.client.post("/tts", json=LINE).headers["x-cache-key"]
    (disk,) = services_of({"app": live.app}).gateway.cache.tiers
    assert isinstance(disk, DiskTier) and disk._executor is not None
    release = threading.Event()
    executor = disk._executor
    try:
        for _ in range(disk._io_threads):
            executor.submit(release.wait, 10)
        wait_for(lambda: executor._work_queue.qsize() == 0)  # every read thread is waiting
        with socket.create_connection(host_port(live), timeout=10) as conn:
            conn.sendall(request("GET", f"/v1/audio/{key}.wav"))
            # Its own read: the next request goes only once the hit's lookup waits for a thread.
            wait_for(lambda: executor._work_queue.qsize() > 0)
            conn.sendall(request("GET", "/v1/no-such-route"))  # no tier involved: 404
            conn.settimeout(0.5)
            with pytest.raises(TimeoutError):
                conn.recv(1)  # nothing yet: not even the 404
            release.set()
            conn.settimeout(10)
            stream = conn.makefile("rb")
            statuses = [read_response(stream).split(b" ", 2)[1] for _ in range(2)]
    finally:
        release.set()
    assert statuses == [b"200", b"404"]
    assert wire_of(live).answered == 1


def test_a_cold_hit_in_the_lane_is_promoted_into_memory(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    """A second gateway on the same data directory starts with an empty memory tier."""
    key = serve(settings).client.post("/tts", json=LINE).headers["x-cache-key"]
    live = serve(settings)
    wire = wire_of(live)
    (first,) = exchange(live, request("GET", f"/v1/audio/{key}.wav"))
    assert b"\r\nx-cache-tier: disk\r\n" in first
    assert wire.answered == 1
    wait_for(lambda: in_memory(live, key))
