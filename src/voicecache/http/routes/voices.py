"""Voices: built-in voices of every engine, and uploaded reference samples for cloning.

`GET /v1/voices` lists what the caller may use; `POST /v1/voices` uploads a sample (multipart
`name`, `file`, optional `base_voice`, `public`); `GET/PUT/DELETE /v1/voices/{id}` read,
replace and erase one. Erasure removes the encrypted sample and every cached audio entry made
with the voice from every tier, and answers with what was erased.

Private voices are visible to their tenant only: to anybody else they do not exist (404).
Changing or erasing a voice needs the `voices` scope and ownership, or the `admin` scope.

A sample must never touch the disk unencrypted, so these routes parse multipart bodies with
files kept in memory up to the upload limit (`InMemoryUploadRoute`), where Starlette's parser
would spool every file over 1 MiB to a plaintext temporary file. The security middleware has
already capped the body at the upload limit plus room for the form envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Receive, Scope

from voicecache.errors import Forbidden, NotFound, PayloadTooLarge
from voicecache.http.middleware.security import UPLOAD_ENVELOPE_BYTES
from voicecache.http.routes.deps import GatewayDep, SettingsDep
from voicecache.http.routes.schemas import error_responses
from voicecache.http.state import services_of
from voicecache.security.auth import ANONYMOUS, Principal
from voicecache.voices.registry import VoiceRecord, VoiceRegistry, erase_cached_audio


class InMemoryFormRequest(Request):
    """A request whose multipart files stay in memory up to `spool_max_size` bytes.

    Starlette (pinned in pyproject.toml) lets only the parser's `spool_max_size` decide when
    an uploaded file moves to a temporary file, and `Request.form()` takes no such argument,
    so this parses multipart bodies itself with that one attribute changed and leaves
    everything else (other content types, caching of the parsed form) to Starlette."""

    def __init__(self, scope: Scope, receive: Receive, spool_max_size: int) -> None:
        super().__init__(scope, receive)
        self.spool_max_size = spool_max_size

    async def _get_form(
        self,
        *,
        max_files: int | float = 1000,
        max_fields: int | float = 1000,
        max_part_size: int = 1024 * 1024,
    ) -> FormData:
        content_type = self.headers.get("content-type", "")
        if self._form is None and content_type.lower().startswith("multipart/form-data"):
            try:
                async with aclosing(self.stream()) as stream:
                    parser = MultiPartParser(
                        self.headers,
                        stream,
                        max_files=max_files,
                        max_fields=max_fields,
                        max_part_size=max_part_size,
                    )
                    parser.spool_max_size = self.spool_max_size
                    self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(status_code=400, detail=exc.message) from exc
        return await super()._get_form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )


class InMemoryUploadRoute(APIRoute):
    """A route whose form parsing keeps uploaded files in memory (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def in_memory(request: Request) -> Response:
            # Every upload fits: the security middleware refused larger bodies already.
            limit = services_of(request.scope).settings.max_upload_bytes + UPLOAD_ENVELOPE_BYTES
            return await handler(InMemoryFormRequest(request.scope, request.receive, limit))

        return in_memory


router = APIRouter(tags=["voices"], route_class=InMemoryUploadRoute)


ERRORS = error_responses(404, 503)


class BuiltinVoiceOut(BaseModel):
    id: str
    name: str
    language: str


class EngineVoicesOut(BaseModel):
    voices: list[BuiltinVoiceOut]
    emotions: list[str]


class VoiceOut(BaseModel):
    """An uploaded voice, as its owner or anyone who may use it sees it."""

    id: str = Field(description="Use it as `voice` in speech requests")
    name: str
    version: str = Field(description="HMAC of the sample and settings; part of cache keys")
    public: bool
    mine: bool = Field(description="Whether the caller's tenant owns it")
    base_voice: str | None = Field(description="Engine voice it is spoken with")
    format: str
    duration: float
    sample_rate: int
    size: int
    created: float
    updated: float
    median_pitch_hz: float | None
    syllables_per_second: float | None


class VoiceListOut(BaseModel):
    default_engine: str
    engines: dict[str, EngineVoicesOut]
    uploaded: list[VoiceOut]


class TierErasureOut(BaseModel):
    entries: int
    bytes: int
    errors: int


class ErasureOut(BaseModel):
    id: str
    erased_sample_bytes: int
    erased_entries: int
    tiers: dict[str, TierErasureOut]


def _principal(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else ANONYMOUS


def _registry(gateway: Any) -> VoiceRegistry:
    voices = gateway.voices
    if not isinstance(voices, VoiceRegistry):
        raise NotFound("voice uploads are not enabled on this gateway")
    return voices


def _out(record: VoiceRecord, principal: Principal) -> VoiceOut:
    return VoiceOut(
        id=record.id,
        name=record.name,
        version=record.version,
        public=record.public,
        mine=record.tenant == principal.tenant,
        base_voice=record.base_voice,
        format=record.format,
        duration=record.duration,
        sample_rate=record.sample_rate,
        size=record.size,
        created=record.created,
        updated=record.updated,
        median_pitch_hz=record.settings.get("median_pitch_hz"),
        syllables_per_second=record.settings.get("syllables_per_second"),
    )


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the uploaded file is larger than the limit of {limit} bytes")
    return data


def _owned(registry: VoiceRegistry, voice_id: str, principal: Principal) -> VoiceRecord:
    """The voice if the caller may change it: its owner, or an admin (others get 404 for
    private voices and 403 for public ones they can see but not change)."""
    if principal.has("admin"):
        record = registry.store.get(voice_id)
        if record is None:
            raise NotFound(f"no voice {voice_id!r}")
        return record
    record = registry.visible(voice_id, principal.tenant)
    if record.tenant != principal.tenant:
        raise Forbidden(f"voice {voice_id} belongs to another tenant")
    return record


def _audit(request: Request, action: str, principal: Principal, **details: Any) -> None:
    services_of(request.scope).audit.record(action, principal, **details)


@router.get("/v1/voices", response_model=VoiceListOut, responses=ERRORS)
async def list_voices(request: Request, gateway: GatewayDep) -> VoiceListOut:
    """Built-in voices and emotions of every engine, and the uploaded voices the caller may
    use (its own and public ones)."""
    principal = _principal(request)
    uploaded: list[VoiceOut] = []
    if isinstance(gateway.voices, VoiceRegistry):
        records = await asyncio.to_thread(gateway.voices.list, principal.tenant)
        uploaded = [_out(record, principal) for record in records]
    return VoiceListOut(
        default_engine=gateway.default_engine,
        engines={
            name: EngineVoicesOut(
                voices=[
                    BuiltinVoiceOut(id=v.id, name=v.name, language=v.language)
                    for v in engine.voices()
                ],
                emotions=list(engine.emotions()),
            )
            for name, engine in gateway.engines.items()
        },
        uploaded=uploaded,
    )


@router.post("/v1/voices", status_code=201, response_model=VoiceOut, responses=ERRORS)
async def upload_voice(
    request: Request,
    gateway: GatewayDep,
    settings: SettingsDep,
    name: Annotated[str, Form(description="A label for the voice")],
    file: Annotated[UploadFile, File(description="WAV, FLAC, MP3 or OGG, ≤ max_upload_*")],
    base_voice: Annotated[
        str | None, Form(description="Engine voice to speak with (default: default voice)")
    ] = None,
    public: Annotated[bool, Form(description="Usable by every tenant")] = False,
) -> VoiceOut:
    """Upload a reference sample (stored encrypted); returns the new voice's id and version."""
    registry = _registry(gateway)
    principal = _principal(request)
    data = await _read_upload(file, settings.max_upload_bytes)
    record = await asyncio.to_thread(
        registry.store.create,
        name=name,
        data=data,
        tenant=principal.tenant,
        base_voice=base_voice,
        public=public,
    )
    _audit(request, "voice.create", principal, voice=record.id, version=record.version)
    return _out(record, principal)


@router.get("/v1/voices/{voice_id}", response_model=VoiceOut, responses=ERRORS)
async def get_voice(request: Request, gateway: GatewayDep, voice_id: str) -> VoiceOut:
    """One uploaded voice (404 for voices of other tenants that are not public)."""
    principal = _principal(request)
    record = _registry(gateway).visible(voice_id, principal.tenant)
    return _out(record, principal)


@router.put("/v1/voices/{voice_id}", response_model=VoiceOut, responses=ERRORS)
async def replace_voice(
    request: Request,
    gateway: GatewayDep,
    settings: SettingsDep,
    voice_id: str,
    file: Annotated[UploadFile | None, File(description="A new sample")] = None,
    name: Annotated[str | None, Form()] = None,
    base_voice: Annotated[str | None, Form()] = None,
    public: Annotated[bool | None, Form()] = None,
) -> VoiceOut:
    """Replace the sample and/or settings. A new sample or base voice is a new version, so
    new cache keys; audio of the old version is erased from every tier."""
    registry = _registry(gateway)
    principal = _principal(request)
    record = _owned(registry, voice_id, principal)
    data = None if file is None else await _read_upload(file, settings.max_upload_bytes)
    updated = await asyncio.to_thread(
        registry.store.update, record, data=data, name=name, base_voice=base_voice, public=public
    )
    if updated.version != record.version or updated.public != record.public:
        # Audio of the old sample, or keyed for the old audience, must go everywhere.
        registry.forget(voice_id)
        await erase_cached_audio(gateway.cache, voice_id)
    _audit(request, "voice.update", principal, voice=voice_id, version=updated.version)
    return _out(updated, principal)


@router.delete("/v1/voices/{voice_id}", response_model=ErasureOut, responses=ERRORS)
async def delete_voice(request: Request, gateway: GatewayDep, voice_id: str) -> ErasureOut:
    """Erase the voice: its encrypted sample and every cached entry made with it, in every
    tier. Answers with what was erased."""
    registry = _registry(gateway)
    principal = _principal(request)
    record = _owned(registry, voice_id, principal)
    sample_bytes = await asyncio.to_thread(registry.store.delete, record)
    registry.forget(voice_id)
    tiers = await erase_cached_audio(gateway.cache, voice_id)
    erased = ErasureOut(
        id=voice_id,
        erased_sample_bytes=sample_bytes,
        erased_entries=sum(t["entries"] for t in tiers.values()),
        tiers={name: TierErasureOut(**counts) for name, counts in tiers.items()},
    )
    _audit(
        request,
        "voice.delete",
        principal,
        voice=voice_id,
        owner=record.tenant,
        erased_entries=erased.erased_entries,
        by_admin=record.tenant != principal.tenant,
    )
    return erased
