"""Any OpenAI-compatible speech server: OpenAI itself, openedai-speech, Kokoro-FastAPI,
LocalAI…

Wire format: `POST {base_url}/v1/audio/speech` with a bearer key and JSON holding only the
documented fields `model`, `input`, `voice`, `instructions` (only when there are some),
`response_format` and `speed`; OpenAI rejects any other field with a 400. We ask for a
lossless format (`wav` by default, `flac` optionally) and store audio in our own canonical
codec.

`stream` (streamed misses) asks for `pcm` instead: raw 24 kHz 16-bit mono that OpenAI and the
compatible servers send with chunked transfer as it is made (OpenAI's default
`stream_format` is `audio`, so the field is not sent: servers that do not know it never see
it), and hands each chunk on as it arrives.

OpenAI has no emotion parameter: an engine accepts `neutral` and whatever emotions are
mapped to style instructions (`emotion_instructions`, for models that follow instructions such
as gpt-4o-mini-tts). The mapped instruction goes before the caller's own instructions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Literal

import httpx

from voicecache.codecs import PCM_RATE, Audio
from voicecache.engines.remote import (
    RemoteEngine,
    required_url,
    string_table,
    upstream_format,
    voice_list,
)
from voicecache.engines.spec import EngineSpec
from voicecache.errors import EngineError
from voicecache.model import SynthesisJob, VoiceInfo

SPEECH_PATH = "/v1/audio/speech"
OPENAI_VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
UpstreamFormat = Literal["wav", "flac"]


class OpenAIEngine(RemoteEngine):
    """An OpenAI-compatible `/v1/audio/speech` server."""

    # Cheap, authenticated, and spoken by OpenAI and most compatible servers (a 404 from one
    # that lacks it still proves it is up).
    probe_path = "/v1/models"

    def __init__(
        self,
        *,
        name: str = "openai",
        base_url: str,
        api_key: str | None = None,
        model: str = "tts-1",
        model_version: str = "tts-1",
        voices: Sequence[str] | None = None,
        emotion_instructions: Mapping[str, str] | None = None,
        upstream_format: UpstreamFormat = "wav",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_connections: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # OpenAI SDKs take the base URL with `/v1`; accept it either way.
        base_url = base_url.rstrip("/").removesuffix("/v1")
        super().__init__(
            name=name,
            model_version=model_version,
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            headers=headers,
            transport=transport,
        )
        if upstream_format not in ("wav", "flac"):
            raise ValueError(f"upstream_format must be wav or flac, not {upstream_format!r}")
        self.model = model
        self.upstream_format: UpstreamFormat = upstream_format
        self._voice_ids = tuple(voices) if voices else OPENAI_VOICES
        self._voices = [VoiceInfo(v, v) for v in self._voice_ids]
        self.emotion_instructions = {"neutral": ""} | {
            k.strip().lower(): v for k, v in (emotion_instructions or {}).items()
        }

    def voices(self) -> Sequence[VoiceInfo]:
        return self._voices

    def emotions(self) -> Sequence[str]:
        return tuple(self.emotion_instructions)

    def accepts_voice(self, voice: str) -> bool:
        return voice in self._voice_ids

    def instructions(self, job: SynthesisJob) -> str | None:
        """The instructions sent upstream: the emotion's, then the caller's."""
        parts = [self.emotion_instructions.get(job.emotion, ""), job.instructions or ""]
        joined = " ".join(part.strip() for part in parts if part and part.strip())
        return joined or None

    def key_options(self, job: SynthesisJob) -> dict[str, Any]:
        options: dict[str, Any] = {"model": self.model}
        instructions = self.instructions(job)
        if instructions:
            options["instructions"] = instructions
        return options

    def request_body(self, job: SynthesisJob) -> dict[str, Any]:
        """The JSON sent upstream for `job`: documented fields only."""
        if job.emotion not in self.emotion_instructions:
            raise EngineError(f"engine {self.name} has no instructions for {job.emotion!r}")
        body: dict[str, Any] = {
            "model": self.model,
            "input": job.text,
            "voice": job.voice,
            "response_format": self.upstream_format,
            "speed": job.speed,
        }
        instructions = self.instructions(job)
        if instructions:
            body["instructions"] = instructions
        return body

    async def synthesize(self, job: SynthesisJob) -> Audio:
        return await self._post_audio(SPEECH_PATH, self.request_body(job))

    async def stream(self, job: SynthesisJob) -> AsyncGenerator[Audio, None]:
        body = self.request_body(job) | {"response_format": "pcm"}
        async with aclosing(self._stream_pcm(SPEECH_PATH, body, PCM_RATE)) as chunks:
            async for chunk in chunks:
                yield chunk


def build(spec: EngineSpec) -> OpenAIEngine:
    """Factory of kind `openai` (entry point group `voicecache.engines`).

    Options: `voices` (voice ids to accept), `emotion_instructions` (emotion → style
    instruction), `upstream_format` (wav, flac). The model version defaults to the model."""
    model = spec.model or "tts-1"
    fmt: UpstreamFormat = "flac" if upstream_format(spec, ("wav", "flac")) == "flac" else "wav"
    return OpenAIEngine(
        name=spec.name,
        base_url=required_url(spec),
        api_key=spec.api_key,
        model=model,
        model_version=spec.model_version or model,
        voices=voice_list(spec),
        emotion_instructions=string_table(spec, "emotion_instructions"),
        upstream_format=fmt,
        timeout=spec.timeout,
        connect_timeout=spec.connect_timeout,
        max_connections=spec.max_concurrency,
    )
