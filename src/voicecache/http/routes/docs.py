"""`GET /docs`: Swagger UI, served whole by the app, so the API docs work without internet.

FastAPI's own `/docs` loads Swagger UI from a CDN: a blank page offline, behind strict
firewalls, or in air-gapped deployments. The assets come from the `fastapi-swagger` wheel
(Swagger UI 5, which renders the OpenAPI 3.1 documents FastAPI writes) and are served from
`/docs/assets/` with a long cache lifetime; the page itself references nothing else.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from voicecache.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return files("fastapi_swagger.resources").joinpath(name).read_bytes()


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """The interactive API documentation (Swagger UI)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="voicecache API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        # No call-outs: Swagger UI would otherwise ask validator.swagger.io about the spec.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(f"{ASSETS}/{{name}}")
async def swagger_asset(name: str) -> Response:
    """One of Swagger UI's files (a fixed list: no client string becomes a path)."""
    media_type = _MEDIA_TYPES.get(name)
    if media_type is None:
        raise NotFound(f"no documentation asset {name!r}")
    return Response(
        _asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )
