"""The FastAPI application: HTTP only, thin over `gateway.py`.

`create_app(settings)` builds the app with a lifespan that opens the gateway and closes it
again; there is no module-level app or settings. Every `VoicecacheError` becomes a JSON
`{"detail": ...}` response with the error's status here, in one place.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from voicecache import __version__
from voicecache.bootstrap import build_gateway
from voicecache.cache.invalidation.maintenance import Maintenance
from voicecache.cache.service import Gateway
from voicecache.errors import VoicecacheError
from voicecache.http.middleware.accesslog import AccessLog, AccessLogMiddleware, access_log_enabled
from voicecache.http.middleware.fastlane import FastLane
from voicecache.http.middleware.security import install_security
from voicecache.http.routes import admin, audio, dashboard, metrics, speech, system, voices
from voicecache.http.routes.schemas import COMMON_ERRORS
from voicecache.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> FastAPI:
    """The voicecache ASGI app for `settings` (or a prepared `gateway`, for tests)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = gateway or build_gateway(settings)
        app.state.maintenance = Maintenance(app.state.gateway, settings).start()
        try:
            yield
        finally:
            await app.state.maintenance.stop()
            await app.state.gateway.aclose()

    app = FastAPI(
        title="voicecache",
        version=__version__,
        summary="A caching gateway for text-to-speech.",
        lifespan=lifespan,
        responses=COMMON_ERRORS,  # documents `{"detail": str}` instead of FastAPI's 422 shape
        # FastAPI's built-in OpenTelemetry probes the tracer/meter providers on every request,
        # ahead of the fast lane; voicecache exports its own Prometheus metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.include_router(speech.router)
    app.include_router(system.router)
    app.include_router(voices.router)
    app.include_router(audio.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    _install_error_handlers(app)
    # Added first: middleware added after it (authentication, body limits) wraps it and
    # so still runs before it.
    app.add_middleware(FastLane, build_request=speech.request_from_json)
    install_security(app, settings)
    if access_log_enabled(settings):  # outermost: it times and logs every request
        app.state.access_log = AccessLog(settings.log_format)
        app.add_middleware(AccessLogMiddleware, access_log=app.state.access_log)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoicecacheError)
    async def voicecache_error(_: Request, exc: VoicecacheError) -> JSONResponse:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
        return JSONResponse({"detail": _describe(errors)}, status_code=422)

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
