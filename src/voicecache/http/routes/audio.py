"""Stored audio by key: `GET /v1/audio/{key}.{format}` (and `HEAD`).

Plain GETs that CDNs and `<audio>` elements can cache, revalidate and seek. The key is the
`X-Cache-Key` of a synthesis response; a format other than the stored ones is transcoded
once from the canonical entry. Private-voice audio is found only by its own tenant.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voicecache.codecs import FORMATS, AudioFormat
from voicecache.errors import NotFound
from voicecache.http.errors import error_response
from voicecache.http.responses import audio_response
from voicecache.http.routes.deps import GatewayDep, TenantDep
from voicecache.http.routes.speech import AUDIO_RESPONSES

router = APIRouter(tags=["audio"])

_KEY = re.compile(r"^[0-9a-f]{64}$")


@router.get("/v1/audio/{key}.{fmt}", responses=AUDIO_RESPONSES, response_class=Response)
async def audio_by_key(
    key: str, fmt: str, request: Request, gateway: GatewayDep, tenant: TenantDep
) -> Response:
    """The audio stored under `key`, encoded as `fmt`; 404 when nothing is stored."""
    try:
        if not _KEY.match(key) or fmt not in FORMATS:
            raise NotFound(f"no audio stored under {key}.{fmt}")
        fmt_checked: AudioFormat = fmt
        result = await gateway.fetch(key, fmt_checked, tenant=tenant)
    except NotFound as exc:
        # The audio may exist a moment later (after a synthesis): no cache may keep the 404.
        return error_response(exc, request.scope, **{"Cache-Control": "no-store"})
    return audio_response(request, result, gateway.clock())


# HEAD answers with the same headers and no body; kept out of the OpenAPI schema so that the
# one handler does not get two operation ids.
router.add_api_route(
    "/v1/audio/{key}.{fmt}",
    audio_by_key,
    methods=["HEAD"],
    response_class=Response,
    include_in_schema=False,
)
