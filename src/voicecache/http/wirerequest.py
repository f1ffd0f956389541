"""One whole, plain HTTP/1.1 request read straight from the bytes of one socket read.

For a memory hit, feeding httptools costs more than the answer: a Python callback per
header, uvicorn's ASGI scope (with a copy of the app state) built for every request, a
head deadline armed and disarmed. Most requests a client sends on a keep-alive connection are
small and arrive whole in one read, and they look alike. `read_whole` takes exactly those:
a `GET` or `POST` request line, well-formed header lines, and (for a `POST`) a body whose
`Content-Length` it matches exactly, with nothing after it. Anything else, including every
request httptools would refuse, is left to httptools: `read_whole` answers None and the
protocol parses the bytes as it always did.

So this reader only ever accepts a subset of what httptools accepts, and gives the fast lane
the same (lower-cased name, value) header list uvicorn would have built.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The request line: method, a path of visible ASCII with no query or fragment, HTTP/1.1.
_REQUEST_LINE = re.compile(rb"(GET|POST) (/[!$&-;=@-~]*) HTTP/1\.1")
# One header line: a token, a colon, at most one space, then a value of visible ASCII with
# single inner spaces or tabs and no whitespace at either end (or nothing). Anything looser
# (obs-fold, trailing whitespace, bytes above 0x7e, NUL) is httptools' to judge.
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?((?:[!-~](?:[ \t!-~]*[!-~])?)?)")
_END_OF_HEAD = b"\r\n\r\n"


class WholeRequest(NamedTuple):
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order, as uvicorn lists them
    body: bytes


def read_whole(data: bytes, head_limit: int) -> WholeRequest | None:
    """The request `data` holds exactly, if it is one plain keep-alive HTTP/1.1 GET or POST
    whose head is at most `head_limit` bytes; else None (let httptools parse it)."""
    end = data.find(_END_OF_HEAD)
    if end < 0 or end + 4 > head_limit:
        return None
    lines = data[:end].split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return None
    headers = []
    declared = -1
    for raw in lines[1:]:
        header = _HEADER_LINE.fullmatch(raw)
        if header is None:
            return None
        name = header[1].lower()
        value = header[2]
        if name == b"content-length":
            if declared >= 0 or not value.isdigit():
                return None
            declared = int(value)
        elif name == b"connection" and value.lower() != b"keep-alive":
            return None  # `close` ends the connection, `upgrade` changes it: httptools' job
        elif name == b"transfer-encoding":
            return None  # a chunked body is never whole here
        headers.append((name, value))
    body = data[end + 4 :]
    if len(body) != max(declared, 0):
        return None  # a body still arriving, or a pipelined request behind this one
    return WholeRequest(line[1], line[2], headers, body)
