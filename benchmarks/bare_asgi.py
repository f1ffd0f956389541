"""The ceiling for any ASGI app: a bare ASGI callable that answers every request with the bytes
of one file (`BARE_ASGI_FILE`), read once at start-up, under the same uvicorn settings as
`voicecache serve` (uvloop, httptools, no access log). `benchmarks/hitpath.py` measures it
beside nginx and the gateway, so the report shows how much of a hit's cost is the Python
server itself and how much is voicecache's own work (routing, security, cache lookup,
headers, metrics)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_BODY = Path(os.environ["BARE_ASGI_FILE"]).read_bytes() if "BARE_ASGI_FILE" in os.environ else b""
_HEADERS = [(b"content-type", b"audio/wav"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
