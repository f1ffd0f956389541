"""Where errors become HTTP answers, in one place for the whole app.

Every `VoicecacheError` knows its status (`errors.py`). Two shapes of body, chosen by path:

- native routes (`/tts`, `/admin/…`, `/metrics`…): `{"detail": "<one readable sentence>"}`;
- OpenAI's routes, everything under `/v1/`: OpenAI's error object, so its SDKs show the
  reason instead of a bare status: `{"error": {"message", "type", "param", "code"}}`, with
  OpenAI's statuses (400 for an invalid request where the native API says 422). `type` is
  `invalid_request_error`, `authentication_error` (401), `permission_error` (403),
  `rate_limit_error` (429) or `server_error` (5xx); `param` is the offending field in
  OpenAI's spelling (`input`, `response_format`, `model`…) when known; `code` is the error
  class in snake case (`unknown_voice`, `rate_limited`…).

Headers follow the status (`Retry-After`, `WWW-Authenticate`, `Connection: close`), and each
answer is counted in `voicecache_errors_total{type=<error class>}`. FastAPI's exception
handlers and the raw ASGI middleware (security, fast lane) both answer through here, so a 401
or a 413 looks the same whichever layer refused the request. Anything unexpected is logged
with its traceback and answered with a plain 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import Scope, Send

from voicecache.errors import InvalidRequest, MalformedJson, VoicecacheError
from voicecache.http.state import services_of

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1/"
# Native field names → OpenAI's, for `param` (the request model speaks the native names).
_OPENAI_PARAMS = {"text": "input", "format": "response_format", "engine": "model"}
# Statuses Starlette itself answers (unknown route, wrong method), as error class names.
_HTTP_NAMES = {404: "NotFound", 405: "MethodNotAllowed"}


def is_openai_path(path: str) -> bool:
    """Whether `path` answers errors in OpenAI's shape."""
    return path.startswith(OPENAI_PREFIX)


def openai_type(status: int) -> str:
    """OpenAI's error `type` for a status."""
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error"
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_body(
    path: str, status: int, message: str, name: str, param: str | None = None
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of an error answered on `path`."""
    if not is_openai_path(path):
        return status, {"detail": message}
    if status == 422:
        status = 400  # OpenAI's status for every invalid request
    error = {
        "message": message,
        "type": openai_type(status),
        "param": _OPENAI_PARAMS.get(param, param) if param else None,
        "code": _snake(name),
    }
    return status, {"error": error}


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


def count_error(scope: Scope | None, name: str) -> None:
    """Count one error answer in `voicecache_errors_total{type=name}` (names are error class
    names, a set bounded by the code)."""
    if scope is None:
        return
    try:
        metrics = services_of(scope).metrics
    except (AttributeError, KeyError):  # before the lifespan built the services
        return
    metrics.error_answered(name)


def _answer(scope: Scope | None, exc: VoicecacheError) -> tuple[int, dict[str, Any]]:
    name = type(exc).__name__
    count_error(scope, name)
    path = scope.get("path", "") if scope is not None else ""
    return error_body(path, exc.status_code, exc.detail, name, getattr(exc, "param", None))


def error_response(
    exc: VoicecacheError, scope: Scope | None = None, **extra_headers: str
) -> JSONResponse:
    """The JSON answer for `exc` to the request of `scope` (counted; shaped by its path)."""
    status, body = _answer(scope, exc)
    return JSONResponse(body, status_code=status, headers=error_headers(exc) | extra_headers)


async def send_error(scope: Scope, send: Send, exc: VoicecacheError) -> None:
    """Answer `exc` from raw ASGI code that runs outside FastAPI (middleware)."""
    status, content = _answer(scope, exc)
    body = json.dumps(content).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [
        (name.lower().encode(), value.encode()) for name, value in error_headers(exc).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ResponseAborted(Exception):
    """Raised once a response has started and must not end cleanly (a stream broken
    upstream): the server drops the connection. Already counted by whoever raises it, and
    never answered: the response has begun."""


def install_error_handlers(app: FastAPI) -> None:
    """Route every error FastAPI sees through `error_response`."""

    @app.exception_handler(VoicecacheError)
    async def voicecache_error(request: Request, exc: VoicecacheError) -> JSONResponse:
        return error_response(exc, request.scope)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return error_response(MalformedJson("malformed JSON body"), request.scope)
        return error_response(InvalidRequest(_describe(errors), _param(errors)), request.scope)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own answers: unknown route, wrong method, a malformed multipart body.
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        count_error(request.scope, name)
        status, body = error_body(request.scope["path"], exc.status_code, str(exc.detail), name)
        return JSONResponse(body, status_code=status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ResponseAborted):  # expected; Starlette re-raises it to the server
            return JSONResponse(None, status_code=500)
        log.exception("unexpected error", exc_info=exc)
        count_error(request.scope, "InternalError")
        status, body = error_body(request.scope["path"], 500, "internal error", "InternalError")
        return JSONResponse(body, status_code=status)


def _describe(errors: Any) -> str:
    """One readable line from pydantic's error list: `input: Field required; speed: …`."""
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _param(errors: Any) -> str | None:
    """The field of the first error (`speed`, `tags.0`), or None for the body as a whole."""
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] in _SOURCES:
            location = location[1:]
        if location:
            return ".".join(location)
    return None


# Where pydantic says a field came from: the first part of an error's `loc`.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})
