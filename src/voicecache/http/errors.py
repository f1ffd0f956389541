"""Where errors become HTTP answers, in one place for the whole app.

Every `VoicecacheError` knows its status (`errors.py`); `error_response` turns one into the
JSON body `{"detail": "<one readable sentence>"}` with the headers its status calls for
(`Retry-After`, `WWW-Authenticate`, `Connection: close`). FastAPI's exception handlers and the
raw ASGI middleware (security, fast lane) both answer through it, so a 401 or a 413 looks the
same whichever layer refused the request. Anything unexpected is logged with its traceback and
answered with a plain 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse
from starlette.types import Send

from voicecache.errors import InvalidRequest, MalformedJson, VoicecacheError

log = logging.getLogger(__name__)


def error_headers(exc: VoicecacheError) -> dict[str, str]:
    """The headers an error's status calls for."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="voicecache"'
    if exc.status_code in (408, 413):
        # The rest of the body may still be on its way: do not try to read past it.
        headers["Connection"] = "close"
    return headers


def error_response(exc: VoicecacheError, **extra_headers: str) -> JSONResponse:
    """The JSON answer for `exc`."""
    return JSONResponse(
        {"detail": exc.detail},
        status_code=exc.status_code,
        headers=error_headers(exc) | extra_headers,
    )


async def send_error(send: Send, exc: VoicecacheError) -> None:
    """Answer `exc` from raw ASGI code that runs outside FastAPI (middleware)."""
    body = json.dumps({"detail": exc.detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [
        (name.lower().encode(), value.encode()) for name, value in error_headers(exc).items()
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """Route every error FastAPI sees through `error_response`."""

    @app.exception_handler(VoicecacheError)
    async def voicecache_error(_: Request, exc: VoicecacheError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return error_response(MalformedJson("malformed JSON body"))
        return error_response(InvalidRequest(_describe(errors)))

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def _describe(errors: Any) -> str:
    """One readable line from pydantic's error list: `input: Field required; speed: …`."""
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
