"""`read_whole` takes only requests httptools would parse the same way, and exactly one.

The reference is httptools itself (the parser `voicecache serve` runs): whatever `read_whole`
accepts, httptools must parse as one complete keep-alive HTTP/1.1 request with the same
method, URL, header list (names lower-cased, as uvicorn lists them) and body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecache.http.wirerequest import WholeRequest, read_whole

LIMIT = 16 * 1024
KEY = "ab" * 32


@dataclass
class Parsed:
    """What httptools made of some bytes: the messages it completed, and any error."""

    messages: list[WholeRequest] = field(default_factory=list)
    error: str | None = None
    keep_alive: list[bool] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    _url: bytes = b""
    _headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    _body: bytes = b""
    _parser: httptools.HttpRequestParser | None = None
    began: int = 0

    def on_message_begin(self) -> None:
        self.began += 1
        self._url, self._headers, self._body = b"", [], b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        assert self._parser is not None
        method = self._parser.get_method()
        self.messages.append(WholeRequest(method, self._url, self._headers, self._body))
        self.keep_alive.append(self._parser.should_keep_alive())
        self.versions.append(self._parser.get_http_version())


def httptools_parse(data: bytes) -> Parsed:
    parsed = Parsed()
    parser = httptools.HttpRequestParser(parsed)
    parsed._parser = parser
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as exc:
        parsed.error = str(exc)
    return parsed


def assert_same_as_httptools(data: bytes, taken: WholeRequest) -> None:
    parsed = httptools_parse(data)
    assert parsed.error is None
    assert parsed.messages == [taken]
    assert parsed.began == 1  # nothing after it: no second message begun
    assert parsed.keep_alive == [True]
    assert parsed.versions == ["1.1"]


GET = f"GET /v1/audio/{KEY}.wav HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer k\r\n\r\n"
POST_BODY = b'{"text": "Hi.", "voice": "en"}'
POST = (
    "POST /tts HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(POST_BODY)}\r\n\r\n"
).encode() + POST_BODY


@pytest.mark.parametrize(
    "data",
    [
        GET.encode(),
        POST,
        b"GET / HTTP/1.1\r\n\r\n",  # no headers at all
        b"GET /x HTTP/1.1\r\nConnection: Keep-Alive\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n",
        b"POST /tts HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_plain_whole_requests_are_read_as_httptools_reads_them(data: bytes) -> None:
    taken = read_whole(data, LIMIT)
    assert taken is not None
    assert_same_as_httptools(data, taken)


def test_header_names_are_lower_cased_and_values_kept_in_order() -> None:
    taken = read_whole(GET.encode(), LIMIT)
    assert taken is not None
    assert taken.method == b"GET"
    assert taken.url == f"/v1/audio/{KEY}.wav".encode()
    assert taken.headers == [(b"host", b"gateway"), (b"authorization", b"Bearer k")]
    assert taken.body == b""


@pytest.mark.parametrize(
    "data",
    [
        GET.encode()[:-2],  # the head is not complete
        POST[:-1],  # the body is not complete
        POST + b"G",  # a pipelined request begins behind it
        GET.encode() + GET.encode(),  # two requests in one read
        GET.replace("HTTP/1.1", "HTTP/1.0").encode(),
        GET.replace("GET", "HEAD").encode(),
        GET.replace(".wav", ".wav?x=1").encode(),
        GET.replace("Host: gateway", "Connection: close").encode(),
        GET.replace("Host: gateway", "Connection: upgrade").encode(),
        GET.replace("Host: gateway", "Host: gateway   ").encode(),  # trailing whitespace
        GET.replace("Host: gateway", "Host:  gateway").encode(),  # two spaces
        GET.replace("Host: gateway", "Host : gateway").encode(),
        GET.replace("Host: gateway", "Host: gate\x7fway").encode(),
        GET.replace("Host: gateway", "Host: gate\x00way").encode(),
        GET.replace("Host: gateway", "Host: gät").encode("latin-1"),  # obs-text
        GET.replace("Host: gateway", "Host: a\r\n b").encode(),  # obs-fold
        GET.replace("\r\n", "\n").encode(),  # bare line feeds
        POST.replace(b"Content-Length: 30", b"Content-Length: 30\r\nContent-Length: 30"),
        POST.replace(b"Content-Length: 30", b"Content-Length: +30"),
        POST.replace(b"Content-Length: 30", b"Transfer-Encoding: chunked"),
        GET.replace("Host: gateway", "Transfer-Encoding: chunked").encode(),  # no chunks yet
    ],
)
def test_anything_else_is_left_to_httptools(data: bytes) -> None:
    assert read_whole(data, LIMIT) is None


def test_a_head_over_the_limit_is_left_to_the_protocol_that_refuses_it() -> None:
    data = GET.encode()
    assert read_whole(data, len(data)) is not None
    assert read_whole(data, len(data) - 1) is None


# -- properties -------------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_!#$%&'*+.^`|~"
TOKEN = st.text(TOKEN_CHARS, min_size=1, max_size=12)
VISIBLE = st.text("".join(chr(c) for c in range(0x21, 0x7F)), min_size=1, max_size=20)
VALUE = st.one_of(
    st.just(""),
    st.builds(lambda a, gap, b: a + gap + b, VISIBLE, st.sampled_from(["", " ", "\t"]), VISIBLE),
    VISIBLE,
)
PATH = st.text("abcz09/-._~!$&'()*+,;=:@", max_size=30).map(lambda tail: "/" + tail)


@st.composite
def plain_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST"]))
    lines = [f"{method} {draw(PATH)} HTTP/1.1"]
    for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=8)):
        if name.lower() in ("content-length", "transfer-encoding", "connection"):
            continue
        lines.append(f"{name}:{draw(st.sampled_from(['', ' ']))}{value}")
    body = draw(st.binary(max_size=64)) if method == "POST" else b""
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@given(plain_requests())
def test_every_plain_request_is_read_and_read_as_httptools_reads_it(data: bytes) -> None:
    taken = read_whole(data, LIMIT)
    assert taken is not None
    assert_same_as_httptools(data, taken)


@st.composite
def mangled_requests(draw: st.DrawFn) -> bytes:
    """A plain request with a few bytes changed, inserted or cut off."""
    data = bytearray(draw(plain_requests()))
    edits = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "insert", "truncate"]),
                st.integers(0, 10_000),
                st.sampled_from(b" \t\r\n\x00\x7f\x80:;?#%,/HGET0123456789"),
            ),
            min_size=1,
            max_size=3,
        )
    )
    for how, at, byte in edits:
        at %= len(data) + 1
        if how == "set" and at < len(data):
            data[at] = byte
        elif how == "insert":
            data.insert(at, byte)
        else:
            del data[at:]
    return bytes(data)


@given(mangled_requests())
def test_whatever_is_read_httptools_reads_the_same(data: bytes) -> None:
    taken = read_whole(data, LIMIT)
    if taken is not None:
        assert_same_as_httptools(data, taken)
