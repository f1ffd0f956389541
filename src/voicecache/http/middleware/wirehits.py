"""The fast lane's protocol half: cache hits answered from the parsed request, below ASGI.

On uvicorn, an ASGI request costs a task, a scope, a receive/send pair and one coroutine per
middleware before the fast lane (fastlane.py) even looks at it; for a memory hit of 100 KB
that is more than the lookup and the write together. So the HTTP protocol class
(`http/protocol.py`) offers each request to `WireHits` first, and `WireHits` answers it on
the spot when it is a plain memory hit:

- `GET /v1/audio/{key}.{format}` whose audio is fresh in memory and belongs to no tenant;
- `POST /tts` / `POST /v1/audio/speech` with a JSON body of at most `FastLane.MEMO_MAX_BODY`
  bytes (declared by `Content-Length`) that the fast lane has already resolved to a key
  (`FastLane.remembered`), whose audio is fresh in memory.

When such a request's audio is not in memory, `answer` hands back the request it admitted
(`Admitted`), and a request the protocol read whole is finished by `answer_cold`: the same
cold lookup the middleware makes (`Gateway.cold_peek`: disk, Redis or S3, the read in the
tier's own threads, integrity checked, the hit promoted into memory), then the same answer.
The protocol reads nothing more from the connection meanwhile.

It runs the same code the middleware would, in the same order: authentication and scope
(`Authenticator.check_scope`), `Cache-Control: private` for callers with a key (unless
`public_audio`), the response headers (`responses.cache_headers`, then uvicorn's default
`server` and `date`), the hit and request metrics (`Gateway.note_hit`,
`observer.request_done`) and the access log line with its `X-Request-ID`. The bytes on the
wire are the ones the ASGI path writes for the same hit.

Everything else is declined and goes through ASGI as usual: any other route or method,
HTTP/1.0 or `Connection: close`, conditional or range requests, `Cache-Control: no-cache`,
`Expect`, `X-Cache-Tags`, chunked bodies, a query string, rate limits configured (they need
the client's address after proxy headers, and may wait), a refused caller (the slow path
writes the 401/403), a miss, and audio of a tenant (the route checks who may have it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from starlette.types import ASGIApp

from voicecache.bootstrap import Services
from voicecache.errors import VoicecacheError
from voicecache.http.bodyfiles import BodyFiles
from voicecache.http.middleware.accesslog import AccessLog, request_id_from
from voicecache.http.responses import cache_headers, made_private
from voicecache.http.state import services_of
from voicecache.http.wirerequest import WholeRequest, read_whole
from voicecache.model import SpeechResult
from voicecache.security.auth import required_scope

# The lifespan-state key under which the fast lane leaves this app's `WireHits`.
WIRE_HITS_STATE = "voicecache.wire_hits"

# What `WireHits.kind` says about a request, from its head alone.
NOT_OURS = 0
AUDIO_GET = 1
SPEECH_POST = 2

# The routes both halves of the fast lane answer (`fullmatch`: `$` would let a trailing newline
# through), and the content types the routes certainly parse as JSON (lower-cased; the routes
# take any `application/*+json` too, and those few go the slow way, which answers them the same).
AUDIO_PATH = r"/v1/audio/([0-9a-f]{64})\.(wav|flac|mp3|opus|pcm)"
SPEECH_PATHS = frozenset({"/tts", "/v1/audio/speech"})
JSON_TYPES = frozenset(
    {b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"}
)
# The same as the raw bytes the protocol sees.
_AUDIO_URL = re.compile(AUDIO_PATH.encode())
_SPEECH_URLS = frozenset(path.encode() for path in SPEECH_PATHS)
# Headers that make a request the slow path's: conditional, partial, upgrades, 100-continue.
_DECLINED = frozenset(
    {
        b"range",
        b"if-none-match",
        b"if-match",
        b"if-modified-since",
        b"if-range",
        b"expect",
        b"upgrade",
        b"transfer-encoding",
        b"x-cache-tags",
    }
)
_STATUS_200 = b"HTTP/1.1 200 OK\r\n"
# The scopes the lane's routes need, looked up once: scopes go by exact path or by prefix, and
# no exact path names one audio file, so every audio path needs what any one needs.
AUDIO_SCOPE = required_scope("GET", f"/v1/audio/{'0' * 64}.wav")
SPEECH_SCOPES = {path: required_scope("POST", path) for path in SPEECH_PATHS}
# How every request the lane may answer starts; a cheap test before reading any further.
_OUR_STARTS = (b"GET /v1/audio/", *(b"POST " + url + b" " for url in _SPEECH_URLS))

# Writes a response: its head, then its body, from `file` (a `BodyFiles` descriptor holding
# exactly the body) when there is one.
Write = Callable[[bytes, bytes, "int | None"], None]


class Admitted(NamedTuple):
    """A plain request `WireHits.answer` let in: what it asks for, and whether its caller
    has a key."""

    kind: int
    method: str
    path: str
    entry_id: str
    engine: str | None  # a speech POST's engine, resolved from its body (GET: the entry's)
    keyed: bool  # the caller authenticated with a key (its audio is private)


class SpeechMemo(Protocol):
    """What WireHits needs of the fast lane: its memo of resolved speech bodies."""

    MEMO_MAX_BODY: int
    answered: int

    def remembered(self, path: str, body: bytes) -> tuple[str, str] | None: ...


class WireHits:
    """Answers plain memory hits for one running app; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        lane: SpeechMemo,
        access_log: AccessLog | None,
        public_audio: bool,
        body_file_bytes: int = BodyFiles.MAX_BYTES,
    ) -> None:
        self._scope = {"app": app}  # how `services_of` finds this start's services
        self._services: Services | None = None  # found at the first request, after start-up
        self.lane = lane
        self.access_log = access_log
        self.public_audio = public_audio
        self.answered = 0  # requests answered here (for tests and benchmarks)
        # Hot bodies in memory-backed files, for `sendfile`.
        self.bodies = BodyFiles(max_bytes=body_file_bytes)

    def read(self, data: bytes, head_limit: int) -> tuple[int, WholeRequest] | None:
        """The request in `data`, and its `kind`, when `data` is exactly one whole request the
        lane may answer (`wirerequest.read_whole`); else None, and the parser takes it."""
        if not data.startswith(_OUR_STARTS):
            return None
        request = read_whole(data, head_limit)
        if request is None:
            return None
        kind = self.kind(request.method, request.url, request.headers)
        return None if kind == NOT_OURS else (kind, request)

    def kind(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
        """Whether the request with this head may be ours (`AUDIO_GET`, `SPEECH_POST`), or is
        certainly the slow path's (`NOT_OURS`). Cheap: it runs on every request."""
        if method == b"GET":
            if _AUDIO_URL.fullmatch(url) is None:
                return NOT_OURS
            for name, value in headers:
                if name in _DECLINED or name == b"content-length":
                    return NOT_OURS
                if name == b"cache-control" and b"no-cache" in value.lower():
                    return NOT_OURS
            return AUDIO_GET
        if method != b"POST" or url not in _SPEECH_URLS:
            return NOT_OURS
        json_body = False
        declared = -1
        for name, value in headers:
            if name in _DECLINED:
                return NOT_OURS
            if name == b"content-type":
                if json_body or value.lower() not in JSON_TYPES:
                    return NOT_OURS
                json_body = True
            elif name == b"content-length":
                if declared >= 0 or not value.isdigit():
                    return NOT_OURS
                declared = int(value)
            elif name == b"cache-control" and b"no-cache" in value.lower():
                return NOT_OURS
        if not json_body or not 0 < declared <= self.lane.MEMO_MAX_BODY:
            return NOT_OURS
        return SPEECH_POST

    def answer(
        self,
        kind: int,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        arrived: float,
        default_headers: list[tuple[bytes, bytes]],
        write: Write,
    ) -> bool | Admitted:
        """Write the whole response for a request `kind` said may be ours, and record it, if
        it is a plain memory hit (True). False (nothing written) when the slow path must
        answer; the `Admitted` request when it is plain but its audio is not in memory, for
        `answer_cold` to finish (or to decline too)."""
        services = self._services
        if services is None:
            services = self._services = services_of(self._scope)
        if services.rate_limits is not None:
            return False
        path = url.decode("ascii")
        if kind == AUDIO_GET:
            method, needed = "GET", AUDIO_SCOPE
        else:
            method, needed = "POST", SPEECH_SCOPES[path]
        authorization = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            principal = services.authenticator.check_scope(needed, authorization)
        except VoicecacheError:
            return False  # the slow path writes the 401 or 403
        gateway = services.gateway
        keyed = principal.key_id is not None
        result: SpeechResult | None
        if kind == AUDIO_GET:
            admitted = Admitted(kind, method, path, path[10:], None, keyed)  # after /v1/audio/
            result = gateway.memory_peek(admitted.entry_id)
            if result is None:
                return admitted
            if result.meta.tenant is not None:
                return False
            gateway.note_hit(admitted.entry_id, result.meta)
        else:
            if len(body) > services.settings.max_body_bytes:
                return False
            resolved = self.lane.remembered(path, body)
            if resolved is None:
                return False
            admitted = Admitted(kind, method, path, *resolved, keyed)
            result = gateway.memory_hit(admitted.entry_id)
            if result is None:
                return admitted
            self.lane.answered += 1
        self._respond(admitted, result, headers, arrived, default_headers, write)
        return True

    async def answer_cold(
        self,
        admitted: Admitted,
        headers: list[tuple[bytes, bytes]],
        arrived: float,
        default_headers: list[tuple[bytes, bytes]],
        write: Write,
    ) -> bool:
        """Finish a request `answer` found plain but not in memory: a fresh hit from the
        tiers below memory (`Gateway.cold_peek`: the read in the tier's own thread pool,
        integrity checked, promoted into memory) is answered as the fast lane middleware
        answers it; False (nothing written) for a miss or a tenant's audio."""
        assert self._services is not None  # `answer` found them
        gateway = self._services.gateway
        result = await gateway.cold_peek(admitted.entry_id)
        if result is None:
            return False
        if admitted.kind == AUDIO_GET:
            if result.meta.tenant is not None:
                return False  # the route checks who may have it
        else:
            self.lane.answered += 1
        gateway.note_hit(admitted.entry_id, result.meta)
        self._respond(admitted, result, headers, arrived, default_headers, write)
        return True

    def _respond(
        self,
        request: Admitted,
        result: SpeechResult,
        headers: list[tuple[bytes, bytes]],
        arrived: float,
        default_headers: list[tuple[bytes, bytes]],
        write: Write,
    ) -> None:
        """Write a hit's response and record it: metrics and the access log line."""
        assert self._services is not None
        gateway = self._services.gateway
        response = [*default_headers, *cache_headers(result, gateway.clock())]
        if request.keyed and not self.public_audio:
            response = made_private(response)
        response.append((b"content-length", str(len(result.data)).encode()))
        access_log = self.access_log
        request_id = ""
        if access_log is not None:
            request_id = request_id_from(headers)
            response.append((b"x-request-id", request_id.encode()))
        head = [_STATUS_200]
        for name, value in response:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.answered += 1  # before the write: a test may read it once the answer arrives
        write(b"".join(head), result.data, self.bodies.fd_for(request.entry_id, result))
        elapsed = time.perf_counter() - arrived
        engine = request.engine if request.engine is not None else result.meta.engine
        gateway.observer.request_done(result, engine, elapsed)
        if access_log is not None:
            access_log.emit(request_id, request.method, request.path, 200, elapsed, result)
