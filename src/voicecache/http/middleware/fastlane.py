"""The fast lane: cache hits answered in raw ASGI, before FastAPI routing.

A cache hit should cost close to what a static file server spends on the same bytes. FastAPI's
routing, dependency injection and response classes cost several times the work of the hit
itself (measured here on one worker with 100 KB clips: uvicorn + FastAPI serves about 0.18×
the requests per second of nginx, raw ASGI about 0.66×), so this middleware answers the common
case itself:

- `GET /v1/audio/{key}.{format}` and `POST /tts` / `POST /v1/audio/speech` whose audio is fresh
  in the memory tier or, failing that, in a slower tier (disk, Redis, S3: `Gateway.cold_peek`,
  one read shared by identical concurrent requests; the disk tier reads in its own thread
  pool, `VOICECACHE_DISK_IO_THREADS`; integrity is checked by header and length, each stored
  copy's checksum once per process, and the hit is promoted into memory);
- with no conditional or partial request headers (`Range`, `If-None-Match`, …) and no
  `Cache-Control: no-cache`.

Everything else, including every error, goes on to the app unchanged (the request body is
replayed), so the fast lane can only ever return what the slow path would have returned for a
hit. It takes only requests the routes would accept: `Content-Type: application/json` (the
exact spellings in `wirehits.JSON_TYPES`; anything else the route may or may not take is left
to it), an `X-Cache-Tags` header validated together with the body's tags exactly as the route does,
and whole-path matches (`fullmatch`: `$` would let a trailing newline through).

Under `voicecache serve` the lane has a second half below ASGI: the HTTP protocol offers each
request to `WireHits` (wirehits.py) first, which answers plain memory hits with the same code
before uvicorn builds an ASGI request at all. This middleware hands it to the protocol through
the lifespan state, and shares its memo with it (`remembered`).

For speech requests, the cache key of each distinct request body is remembered, so a repeated
body costs one digest and one dict lookup instead of JSON parsing, normalization and hashing.
The memo is keyed by the body's SHA-256 (never the body itself), bounded by entries and by
bytes (`memo_max_bytes`), and skips bodies over `MEMO_MAX_BODY` bytes; only built-in voices
are remembered, because an uploaded voice's version can change under the same body.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicecache.bounded import BoundedDict, sizeof_str
from voicecache.cache.service import Gateway
from voicecache.errors import VoicecacheError
from voicecache.http.bodyfiles import BodyFiles
from voicecache.http.middleware.accesslog import AccessLog
from voicecache.http.middleware.wirehits import (
    AUDIO_PATH,
    JSON_TYPES,
    SPEECH_PATHS,
    WIRE_HITS_STATE,
    WireHits,
)
from voicecache.http.responses import cache_headers, note_result
from voicecache.http.state import services_of
from voicecache.model import SpeechRequest, SpeechResult
from voicecache.settings import Settings

_AUDIO_PATH = re.compile(AUDIO_PATH)  # fullmatch
# Requests the slow path must see: conditional, partial, or asking to bypass the cache.
_SLOW_HEADERS = frozenset({b"range", b"if-none-match", b"if-match", b"if-modified-since"})

# (path, raw JSON body, settings, engine names, X-Cache-Tags) → SpeechRequest; raises on
# bad input exactly where the route would.
RequestBuilder = Callable[[str, bytes, Any, Any, str | None], SpeechRequest]


class FastLane:
    """ASGI middleware in front of the voicecache app; see the module docstring."""

    MEMO_MAX_BODY = 4096  # bigger bodies are answered but never remembered
    MEMO_MAX_ENTRIES = 50_000
    # One entry: a 32-byte digest, the storage id (64 hex + format) and a shared engine name.
    MEMO_ENTRY_BYTES = 400
    memo_max_bytes = 4 * 1024 * 1024  # ~10,000 bodies: the hot lines, not every line ever

    def __init__(
        self,
        app: ASGIApp,
        build_request: RequestBuilder | None = None,
        access_log: AccessLog | None = None,
        public_audio: bool = False,
        wire_hits: bool = True,
        body_file_bytes: int = BodyFiles.MAX_BYTES,
    ) -> None:
        self.app = app
        self.build_request = build_request
        # For the protocol's half (wirehits.py), which writes its own log lines and, like the
        # security middleware, keeps audio fetched with a key private unless `public_audio`.
        self.access_log = access_log
        self.public_audio = public_audio
        self.wire_hits = wire_hits
        self.body_file_bytes = body_file_bytes
        # SHA-256 of path and body → (storage id, engine name), for built-in voices only.
        self._memo: BoundedDict[bytes, tuple[str, str]] = BoundedDict(
            self.MEMO_MAX_ENTRIES, self.memo_max_bytes, _memo_entry_size
        )
        self.answered = 0  # speech hits answered here or by `wire` (for tests and benchmarks)
        self.wire: WireHits | None = None  # the protocol's half, for the running app

    @property
    def memo_entries(self) -> int:
        return len(self._memo)

    @property
    def memo_bytes(self) -> int:
        return self._memo.bytes

    def memo_keys(self) -> list[bytes]:
        return list(self._memo)

    def remembered(self, path: str, body: bytes) -> tuple[str, str] | None:
        """The (storage id, engine name) remembered for this speech request body, if any."""
        memo_key = _memo_key(path, body)
        return None if memo_key is None else self._memo.get(memo_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if (
                scope["type"] == "lifespan"
                and self.wire_hits
                and isinstance(scope.get("state"), dict)
            ):
                # The protocol's half of the lane (wirehits.py) finds this app's through the
                # lifespan state; a new one per start, as the app builds new services.
                self.wire = WireHits(
                    scope["app"], self, self.access_log, self.public_audio, self.body_file_bytes
                )
                scope["state"][WIRE_HITS_STATE] = self.wire
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        if method == "GET":
            match = _AUDIO_PATH.fullmatch(path)
            if match is None or not self._plain(scope):
                await self.app(scope, receive, send)
                return
            started = time.perf_counter()
            gateway = services_of(scope).gateway
            entry_id = f"{match.group(1)}.{match.group(2)}"
            result = gateway.memory_peek(entry_id)
            if result is None:
                result = await gateway.cold_peek(entry_id)
            if result is None or result.meta.tenant is not None:
                # Private audio: the slow path checks the tenant (and counts the hit if served).
                await self.app(scope, receive, send)
                return
            gateway.note_hit(entry_id, result.meta)
            note_result(scope, result)
            await self._respond(send, result, gateway.clock())
            gateway.observer.request_done(result, result.meta.engine, time.perf_counter() - started)
            return
        if method != "POST" or path not in SPEECH_PATHS:
            await self.app(scope, receive, send)
            return
        accepted, tags = _speech_headers(scope)
        if not accepted:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        services = services_of(scope)
        body, complete = await _read_body(receive, services.settings.max_body_bytes)
        replay = _replayer(body, complete, receive)
        if not complete:
            await self.app(scope, replay, send)
            return
        gateway = services.gateway
        # A tags header is validated together with the body's tags: no memo for those.
        memo_key = None if tags is not None else _memo_key(path, body)
        resolved = None if memo_key is None else self._memo.get(memo_key)
        if resolved is None:
            # The caller's tenant (set by the security middleware): it decides which uploaded
            # voices exist for this request, exactly as on the slow path.
            tenant = scope.get("state", {}).get("tenant")
            resolved = await self._resolve(
                path, body, tags, services.settings, gateway, tenant, memo_key
            )
        if resolved is not None:
            result = gateway.memory_hit(resolved[0])
            if result is None:
                result = await gateway.cold_peek(resolved[0])
                if result is not None:  # the key carries any tenant: the hit is theirs
                    gateway.note_hit(resolved[0], result.meta)
            if result is not None:
                note_result(scope, result)
                await self._respond(send, result, gateway.clock())
                self.answered += 1
                gateway.observer.request_done(result, resolved[1], time.perf_counter() - started)
                return
        await self.app(scope, replay, send)

    @staticmethod
    def _plain(scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name in _SLOW_HEADERS:
                return False
            if name == b"cache-control" and b"no-cache" in value.lower():
                return False
        return True

    async def _resolve(
        self,
        path: str,
        body: bytes,
        tags: str | None,
        settings: Settings,
        gateway: Gateway,
        tenant: str | None,
        memo_key: bytes | None,
    ) -> tuple[str, str] | None:
        """The storage id for a speech request body, or None when the slow path must decide."""
        if self.build_request is None:
            return None
        try:
            request = self.build_request(path, body, settings, gateway.engines, tags)
            plan = await gateway.plan(request, tenant)
        except (VoicecacheError, ValueError):
            return None  # the slow path produces the proper error response
        resolved = (plan.key.variant_id(request.format), plan.engine.name)
        if memo_key is not None and plan.voice.version == "builtin" and plan.voice.tenant is None:
            self._memo[memo_key] = resolved
        return resolved

    @staticmethod
    async def _respond(send: Send, result: SpeechResult, now: float) -> None:
        headers = cache_headers(result, now)
        headers.append((b"content-length", str(len(result.data)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": result.data})


def _memo_key(path: str, body: bytes) -> bytes | None:
    """The memo's key for a speech request body: its digest, and which route it went to."""
    if len(body) > FastLane.MEMO_MAX_BODY:
        return None
    return hashlib.sha256(body).digest() + (b"t" if path == "/tts" else b"o")


def _memo_entry_size(key: bytes, value: tuple[str, str]) -> int:
    # The engine name is one shared object; the tuple and the storage id are per entry.
    return len(key) + 33 + sizeof_str(value[0]) + 56


def _speech_headers(scope: Scope) -> tuple[bool, str | None]:
    """Whether the route would certainly parse this request's body as JSON and nothing in its
    headers sends it the slow way; and its `X-Cache-Tags` value, if any."""
    json_body = False
    tags: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if json_body or value.lower() not in JSON_TYPES:
                return False, None  # another type, or two of them: the route decides
            json_body = True
        elif name == b"x-cache-tags":
            if tags is not None:
                return False, None
            tags = value.decode("latin-1")
        elif name in _SLOW_HEADERS or (name == b"cache-control" and b"no-cache" in value.lower()):
            return False, None
    return json_body, tags


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or what was read before it passed `limit` (then complete=False)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), size <= limit
        if size > limit:
            return b"".join(chunks), False


def _replayer(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A `receive` that first hands the app the body we already read, then the rest."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay
