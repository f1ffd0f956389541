"""HTTP caching for audio responses: `ETag`, `Cache-Control`, conditional GETs and ranges.

Every audio response (synthesis and by-key) is built here, so browsers, `<audio>` elements
(Safari insists on `Accept-Ranges` and 206 answers) and CDNs see the same rules everywhere:

- `ETag: "<key>.<format>"`: the key names the audio for good, so a strong validator.
- `Cache-Control`: `no-store` when the audio was not stored (`Cache-Control: no-store`
  request, TTL 0), `private, max-age=<TTL left>` for personalized lines and private voices
  (a tenant's audio must never sit in a shared cache), else `public, max-age=<TTL left>`.
  Audio fetched with an API key is `private` too (`keep_private`, applied by the security
  middleware to every response of a keyed caller) unless `public_audio` is set: a shared
  cache would otherwise hand it to callers without a key (RFC 9111 §3.5).
- `If-None-Match` → 304, `Range` → 206 with `Content-Range` (416 when unsatisfiable),
  `If-Range` honoured, `HEAD` answered with the headers alone.

`cache_headers` is a pure function over a `SpeechResult` so the raw-ASGI fast lane can build
the very same headers for plain hits without going through FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope, Send

from voicecache.errors import RangeNotSatisfiable
from voicecache.http.errors import count_error
from voicecache.model import SpeechResult

# Pinned audio never expires; a year is the longest max-age caches honour in practice.
PINNED_MAX_AGE = 365 * 86400

# Audio responses leave their `SpeechResult` in the ASGI scope under this key, so the access
# log (the outermost middleware) can say what was served: a dict store, free on the hit path.
RESULT_SCOPE_KEY = "voicecache.result"
# When the request arrived (`time.perf_counter()`), stamped by the outermost middleware: the
# start of `voicecache_first_byte_seconds` (`streaming.py`).
ARRIVED_SCOPE_KEY = "voicecache.arrived"


def note_result(scope: Scope, result: SpeechResult) -> None:
    """Record what an audio response served, for the access log line."""
    scope[RESULT_SCOPE_KEY] = result


def cache_control(result: SpeechResult, now: float) -> str:
    """The `Cache-Control` value for `result` at time `now` (seconds since the epoch)."""
    if not result.stored:
        return "no-store"
    meta = result.meta
    scope = "private" if meta.personalized or meta.tenant is not None else "public"
    if meta.expires_at is None:
        return f"{scope}, max-age={PINNED_MAX_AGE}"
    return f"{scope}, max-age={max(0, round(meta.expires_at - now))}"


def cache_headers(result: SpeechResult, now: float) -> list[tuple[bytes, bytes]]:
    """Raw ASGI headers for an audio response (without `content-length`, which depends on
    whether the whole body or a range is sent)."""
    headers = [
        (b"content-type", result.content_type.encode()),
        (b"etag", result.etag.encode()),
        (b"cache-control", cache_control(result, now).encode()),
        (b"accept-ranges", b"bytes"),
        (b"x-cache", result.status.encode()),
        (b"x-cache-key", result.key.encode()),
    ]
    if result.tier is not None:
        headers.append((b"x-cache-tier", result.tier.encode()))
    if result.segments is not None:  # a text spoken in segments: how many were cached
        hits, total = result.segments
        headers.append((b"x-cache-segments", f"{hits}/{total}".encode()))
    return headers


def keep_private(send: Send) -> Send:
    """`send`, turning `Cache-Control: public, …` into `private, …` on the way out."""

    async def send_private(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = made_private(message.get("headers", ()))
        await send(message)

    return send_private


def made_private(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with `Cache-Control: public, …` turned into `private, …`."""
    changed = list(headers)
    for index, (name, value) in enumerate(changed):
        if name == b"cache-control" and value.startswith(b"public"):
            changed[index] = (name, b"private" + value[6:])
            break
    return changed


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte positions of a single `bytes=` range, or None to send
    the whole body (no header, a unit other than bytes, several ranges, or syntax we do not
    take: RFC 9110 lets a server ignore those). Raises `RangeNotSatisfiable`."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_text:  # suffix range: the last N bytes
            length = int(last_text)
            if length <= 0 or size == 0:
                raise RangeNotSatisfiable(f"no bytes of the {size}-byte body are in the range")
            return max(0, size - length), size - 1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size:
        raise RangeNotSatisfiable(f"no bytes of the {size}-byte body are in the range")
    if last < first:
        return None
    return first, min(last, size - 1)


def audio_response(request: Request, result: SpeechResult, now: float) -> Response:
    """The HTTP response for `result`: 200, 206, 304 or 416, with the cache headers; headers
    only for `HEAD`."""
    note_result(request.scope, result)
    headers = cache_headers(result, now)
    data = result.data
    status = 200
    if request.method in ("GET", "HEAD") and etag_matches(
        request.headers.get("if-none-match"), result.etag
    ):
        return _raw(304, [h for h in headers if h[0] != b"content-type"], b"")
    range_header = request.headers.get("range")
    if range_header and request.method in ("GET", "HEAD"):
        if_range = request.headers.get("if-range")
        if if_range is None or if_range.strip() == result.etag:
            try:
                span = parse_range(range_header, len(data))
            except RangeNotSatisfiable:
                headers.append((b"content-range", f"bytes */{len(data)}".encode()))
                headers.append((b"content-length", b"0"))
                count_error(request.scope, "RangeNotSatisfiable")
                return _raw(416, headers, b"")
            if span is not None:
                first, last = span
                headers.append((b"content-range", f"bytes {first}-{last}/{len(data)}".encode()))
                data = data[first : last + 1]
                status = 206
    headers.append((b"content-length", str(len(data)).encode()))
    return _raw(status, headers, b"" if request.method == "HEAD" else data)


def _raw(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    # Build the Response around ready raw headers: Starlette would otherwise add its own
    # content-type and content-length and re-encode every header.
    response = Response(status_code=status)
    response.body = body
    response.raw_headers = headers
    return response
