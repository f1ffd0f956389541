"""Synthesis endpoints: OpenAI's `POST /v1/audio/speech` and the native `POST /tts`.

Both build a `SpeechRequest`, hand it to the gateway and turn the `SpeechResult` into bytes
with the cache headers (`responses.py`). Memory hits usually never reach these handlers: the
fast lane in `fastlane.py` answers them first.

Streams: `"stream_format": "audio"` or `"sse"` on `/v1/audio/speech` (OpenAI's field) and
`"stream": true` on `/tts` get `Gateway.speak_stream` and a streamed response
(`streaming.py`). Without them the answer is the whole file, as always. The fast lane never
answers streams: `request_from_json` refuses them (`StreamRequested`), so they reach these
handlers.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from voicecache.cache.policy import CacheControl
from voicecache.http.responses import audio_response
from voicecache.http.routes.deps import GatewayDep, SettingsDep, TenantDep
from voicecache.http.routes.schemas import error_responses
from voicecache.http.streaming import arrival, streamed_response
from voicecache.model import SpeechRequest
from voicecache.settings import Settings

router = APIRouter(tags=["speech"])

AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Audio bytes",
        "content": {
            "audio/wav": {},
            "audio/mpeg": {},
            "audio/flac": {},
            "audio/pcm": {},
            "text/event-stream": {},
        },
    },
    # Unknown or foreign uploaded voice / key (404), engine failures (502-504).
    **error_responses(404, 502, 503, 504),
}


class OpenAISpeechBody(BaseModel):
    """OpenAI's speech request, plus voicecache's extension fields."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        "tts-1", description="An engine name, or any OpenAI model name for the default engine"
    )
    input: str = Field(..., description="Text to speak (≤ max_text_chars)")
    voice: str = Field(..., description="Voice id")
    response_format: str = Field("mp3", description="mp3, opus, flac, wav or pcm")
    speed: float = Field(1.0, description="0.25 to 4.0")
    instructions: str | None = Field(
        None, description="Style instructions, passed to engines that take them"
    )
    emotion: str | None = Field(None, description="Extension: neutral, happy, sad, angry…")
    tags: list[str] | None = Field(None, description="Extension: tags for TTL rules and purges")
    personalized: bool = Field(False, description="Extension: a line that will not repeat")
    stream_format: Literal["audio", "sse"] | None = Field(
        None,
        description="Stream the audio as it is made: `audio` (raw bytes, chunked) or `sse` "
        "(server-sent events); absent: the whole file",
    )
    segments: Literal["sentence", "off"] | None = Field(
        None,
        description="Extension: speak the text as cached sentences (`sentence`) or whole "
        "(`off`); absent: the engine's or the server's setting",
    )


class TTSBody(BaseModel):
    """The native request."""

    model_config = ConfigDict(extra="forbid")

    text: str
    voice: str | None = None
    emotion: str | None = None
    speed: float = 1.0
    format: str = "wav"
    engine: str | None = None
    tags: list[str] | None = None
    personalized: bool = False
    instructions: str | None = None
    stream: bool = False
    segments: Literal["sentence", "off"] | None = None


class StreamRequested(ValueError):
    """A body asking for a stream, refused by `request_from_json`: the fast lane answers only
    whole files and hands anything its builder refuses to the routes."""


CacheControlHeader = Annotated[str | None, Header(alias="Cache-Control")]
TagsHeader = Annotated[str | None, Header(alias="X-Cache-Tags")]
PersonalizedHeader = Annotated[str | None, Header(alias="X-Personalized")]


def _merge_tags(body_tags: list[str] | None, header: str | None) -> list[str]:
    tags = list(body_tags or [])
    if header:
        tags.extend(part for part in header.split(",") if part.strip())
    return tags


def _truthy(header: str | None) -> bool:
    return (header or "").strip().lower() in {"1", "true", "yes", "on"}


def openai_request(
    body: OpenAISpeechBody,
    settings: Settings,
    engines: Container[str],
    tags_header: str | None = None,
    personalized_header: str | None = None,
) -> SpeechRequest:
    """The `SpeechRequest` for an OpenAI-style body."""
    return SpeechRequest.create(
        text=body.input,
        voice=body.voice,
        emotion=body.emotion,
        speed=body.speed,
        format=body.response_format,
        engine=body.model if body.model in engines else None,
        tags=_merge_tags(body.tags, tags_header),
        personalized=body.personalized or _truthy(personalized_header),
        instructions=body.instructions,
        segments=body.segments,
        normalization=settings.normalization,
        max_text_chars=settings.max_text_chars,
    )


def native_request(
    body: TTSBody,
    settings: Settings,
    tags_header: str | None = None,
    personalized_header: str | None = None,
) -> SpeechRequest:
    """The `SpeechRequest` for a native `/tts` body."""
    return SpeechRequest.create(
        text=body.text,
        voice=body.voice or settings.default_voice,
        emotion=body.emotion,
        speed=body.speed,
        format=body.format,
        engine=body.engine,
        tags=_merge_tags(body.tags, tags_header),
        personalized=body.personalized or _truthy(personalized_header),
        instructions=body.instructions,
        segments=body.segments,
        normalization=settings.normalization,
        max_text_chars=settings.max_text_chars,
    )


def request_from_json(
    path: str,
    raw: bytes,
    settings: Settings,
    engines: Container[str],
    tags_header: str | None = None,
) -> SpeechRequest:
    """Parse a raw speech body (and an `X-Cache-Tags` header) as the route at `path` would
    (for the fast lane); raises `StreamRequested` for a body asking for a stream."""
    if path == "/tts":
        native = TTSBody.model_validate_json(raw)
        if native.stream:
            raise StreamRequested("streamed responses are served by the route")
        return native_request(native, settings, tags_header)
    body = OpenAISpeechBody.model_validate_json(raw)
    if body.stream_format is not None:
        raise StreamRequested("streamed responses are served by the route")
    return openai_request(body, settings, engines, tags_header)


@router.post("/v1/audio/speech", responses=AUDIO_RESPONSES, response_class=Response)
async def openai_speech(
    http: Request,
    body: OpenAISpeechBody,
    gateway: GatewayDep,
    settings: SettingsDep,
    tenant: TenantDep,
    cache_control: CacheControlHeader = None,
    x_cache_tags: TagsHeader = None,
    x_personalized: PersonalizedHeader = None,
) -> Response:
    """OpenAI-compatible speech synthesis, cached; streamed with `stream_format`."""
    arrived = arrival(http)
    request = openai_request(body, settings, gateway.engines, x_cache_tags, x_personalized)
    control = CacheControl.parse(cache_control)
    if body.stream_format is not None:
        stream = await gateway.speak_stream(request, tenant=tenant, control=control)
        return streamed_response(http, stream, body.stream_format, arrived)
    result = await gateway.speak(request, tenant=tenant, control=control)
    return audio_response(http, result, gateway.clock())


@router.post("/tts", responses=AUDIO_RESPONSES, response_class=Response)
async def native_tts(
    http: Request,
    body: TTSBody,
    gateway: GatewayDep,
    settings: SettingsDep,
    tenant: TenantDep,
    cache_control: CacheControlHeader = None,
    x_cache_tags: TagsHeader = None,
    x_personalized: PersonalizedHeader = None,
) -> Response:
    """Native speech synthesis, cached; streamed (chunked raw audio) with `"stream": true`."""
    arrived = arrival(http)
    request = native_request(body, settings, x_cache_tags, x_personalized)
    control = CacheControl.parse(cache_control)
    if body.stream:
        stream = await gateway.speak_stream(request, tenant=tenant, control=control)
        return streamed_response(http, stream, "audio", arrived)
    result = await gateway.speak(request, tenant=tenant, control=control)
    return audio_response(http, result, gateway.clock())
