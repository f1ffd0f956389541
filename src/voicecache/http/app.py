"""The FastAPI application: HTTP only, thin over the cache service.

`create_app(settings)` builds the app; its lifespan builds the process's parts with
`bootstrap.build` (or takes prepared `services`, for tests), starts their background work and
closes them again. There is no module-level app or settings. Errors become responses in
`http/errors.py`, in one place.

Middleware, outermost first: access log → security (auth, rate limits, body limits) → fast
lane (memory hits in raw ASGI) → FastAPI's routes. Under `voicecache serve`, plain memory hits
are answered before all of them, in the HTTP protocol (`http/protocol.py`), by the same code.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from voicecache import __version__
from voicecache.bootstrap import Services, build
from voicecache.http.bodyfiles import BodyFiles
from voicecache.http.errors import install_error_handlers
from voicecache.http.middleware.accesslog import AccessLog, AccessLogMiddleware, access_log_enabled
from voicecache.http.middleware.fastlane import FastLane
from voicecache.http.middleware.security import SecurityMiddleware
from voicecache.http.routes import (
    admin,
    audio,
    dashboard,
    docs,
    health,
    metrics,
    speech,
    system,
    voices,
)
from voicecache.http.routes.schemas import COMMON_ERRORS, openai_error_schemas
from voicecache.settings import Settings


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    *,
    metrics_dir: Path | None = None,
) -> FastAPI:
    """The voicecache ASGI app for `settings` (or prepared `services`, for tests);
    `metrics_dir`: the worker processes' shared metrics directory (see `bootstrap.build`)."""
    settings = settings or (services.settings if services is not None else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Built per start, in the serving process: a restarted app keeps only what the
        # persistent tiers hold.
        running = services or build(settings, metrics_dir=metrics_dir)
        app.state.services = running
        running.start()
        # Everything built so far (the app, its routes and models, engines, codecs) lives as
        # long as the process: moved out of the collector's reach, a full collection no longer
        # walks it (measured: 93,000 tracked objects, a 20-50 ms pause each time, in the tail
        # of every latency measurement; after `freeze`, well under a millisecond).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await running.aclose()

    app = FastAPI(
        title="voicecache",
        version=__version__,
        summary="A caching gateway for text-to-speech.",
        lifespan=lifespan,
        # Swagger UI is served by the app itself (routes/docs.py): FastAPI's loads it from a
        # CDN. ReDoc has no offline copy here, so it is off.
        docs_url=None,
        redoc_url=None,
        responses=COMMON_ERRORS,  # documents `{"detail": str}` instead of FastAPI's 422 shape
        # FastAPI's built-in OpenTelemetry probes the tracer/meter providers on every request,
        # ahead of the fast lane; voicecache exports its own Prometheus metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    for router in (speech, system, health, voices, audio, metrics, admin, dashboard, docs):
        app.include_router(router.router)
    _document_openai_errors(app)
    install_error_handlers(app)
    access_log = AccessLog(settings.log_format) if access_log_enabled(settings) else None
    # Starlette runs the middleware added last first.
    app.add_middleware(
        FastLane,
        build_request=speech.request_from_json,
        access_log=access_log,
        public_audio=settings.public_audio,
        wire_hits=settings.wire_hits,
        # Copies of hot bodies for `sendfile`: never more than half the memory tier's budget.
        body_file_bytes=min(BodyFiles.MAX_BYTES, settings.memory_bytes // 2),
    )
    app.add_middleware(
        SecurityMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        client_timeout=settings.client_timeout,
        max_header_bytes=settings.max_header_bytes,
        public_audio=settings.public_audio,
    )
    if access_log is not None:  # outermost: it times and logs every request
        app.state.access_log = access_log
        app.add_middleware(AccessLogMiddleware, access_log=access_log)
    return app


def _document_openai_errors(app: FastAPI) -> None:
    """Make `/openapi.json` show OpenAI's error shape on `/v1/` paths, as they answer."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        return openai_error_schemas(generate())

    app.openapi = openapi  # type: ignore[method-assign]
