"""What the HTTP engines share: one `httpx.AsyncClient` per engine and the conversion of
everything that can go wrong on the wire into voicecache's typed engine errors.

    httpx.TimeoutException           → EngineTimeout      (504, retryable)
    httpx.TransportError (connect,   → EngineUnavailable  (503, retryable)
      reset, protocol)
    HTTP 5xx                         → EngineError        (502, retryable)
    HTTP 429                         → EngineUnavailable  (503, not retried here; Retry-After)
    other HTTP 4xx                   → EngineError        (502, not retryable)
    200 that is not decodable audio  → EngineError        (502, not retryable)
    a streamed body cut short        → EngineUnavailable  (503, retryable: by `resilience.py`
                                                             only before a chunk was handed on)

Retries, the circuit breaker and back-pressure are not here: they live in one place,
`resilience.py`, which wraps every remote engine. The helpers at the end read the parts of an
`EngineSpec` that every HTTP engine's factory reads alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx
import numpy as np

from voicecache import codecs
from voicecache.codecs import Audio
from voicecache.engines.spec import EngineSpec
from voicecache.errors import ConfigError, EngineError, EngineTimeout, EngineUnavailable
from voicecache.model import Engine

# Bodies this short are still worth showing in an error detail; longer ones are cut.
_DETAIL_CHARS = 200


class RemoteEngine(Engine):
    """Base for engines behind HTTP: holds the client and posts synthesis requests."""

    def __init__(
        self,
        *,
        name: str,
        model_version: str,
        base_url: str,
        timeout: float,
        connect_timeout: float,
        max_connections: int,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.model_version = model_version
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max(1, max_connections)),
            transport=transport,
        )

    # What `probe` asks for: any answer proves the server is up (EmotiVoice's FastAPI says 404
    # to `/`); engines with a cheap authenticated endpoint use it, so a bad key shows too.
    probe_path = "/"

    async def probe(self) -> None:
        """A GET of `probe_path`: connect errors, timeouts, 5xx and refused credentials (401,
        403) raise; any other answer means the engine is reachable."""
        try:
            response = await self._client.get(self.probe_path)
        except httpx.TimeoutException as exc:
            raise EngineTimeout(
                f"engine {self.name} at {self.base_url} timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(
                f"engine {self.name} at {self.base_url} is unreachable: "
                f"{type(exc).__name__}: {exc or 'no answer'}"
            ) from exc
        if response.status_code >= 500 or response.status_code in (401, 403):
            raise _status_error(self.name, response)

    async def _post_audio(self, path: str, body: Mapping[str, Any]) -> Audio:
        """POST `body` as JSON to `path`, expect audio bytes back and decode them to PCM.

        Counts one real upstream call in `self.calls`, whatever the outcome."""
        self.calls += 1
        try:
            response = await self._client.post(path, json=dict(body))
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"engine {self.name} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(
                f"engine {self.name} unreachable: {type(exc).__name__}: {exc or 'no answer'}",
                retryable=True,
            ) from exc
        status = response.status_code
        if status >= 400:
            raise _status_error(self.name, response)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith(("text/", "application/json")):
            raise EngineError(
                f"engine {self.name} answered {content_type} instead of audio: {_snippet(response)}"
            )
        # Decoding is CPU work (FLAC/MP3); keep the loop free for hits.
        return await asyncio.to_thread(_decode, self.name, response.content)

    async def _stream_pcm(
        self, path: str, body: Mapping[str, Any], sample_rate: int
    ) -> AsyncGenerator[Audio, None]:
        """POST `body` as JSON to `path` and hand on the answer, raw 16-bit little-endian mono
        PCM at `sample_rate`, chunk by chunk as it arrives. Counts one call in `self.calls`."""
        self.calls += 1
        try:
            async with self._client.stream("POST", path, json=dict(body)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(self.name, response)
                content_type = response.headers.get("content-type", "").split(";")[0].lower()
                if content_type.startswith(("text/", "application/json")):
                    await response.aread()
                    raise EngineError(
                        f"engine {self.name} answered {content_type} instead of audio: "
                        f"{_snippet(response)}"
                    )
                odd = b""  # a sample split across two chunks
                produced = 0
                async for raw in response.aiter_raw():
                    data = odd + raw
                    even = len(data) - len(data) % 2
                    odd = data[even:]
                    if even:
                        produced += even
                        yield Audio(np.frombuffer(data[:even], dtype="<i2"), sample_rate)
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"engine {self.name} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(
                f"engine {self.name} broke off its stream: {type(exc).__name__}: "
                f"{exc or 'no answer'}",
                retryable=True,
            ) from exc
        if produced == 0:
            raise EngineError(f"engine {self.name} sent no audio")

    async def aclose(self) -> None:
        await self._client.aclose()


def _decode(name: str, data: bytes) -> Audio:
    try:
        return codecs.decode(data)
    except EngineError as exc:
        raise EngineError(f"engine {name} sent {len(data)} bytes of {exc.detail}") from exc


def _status_error(name: str, response: httpx.Response) -> EngineError:
    status = response.status_code
    detail = f"engine {name} answered HTTP {status}: {_snippet(response)}"
    if status == 429:
        return EngineUnavailable(
            detail, _retry_after(response.headers.get("retry-after")), upstream_status=status
        )
    return EngineError(detail, retryable=status >= 500, upstream_status=status)


def _retry_after(value: str | None) -> float:
    try:
        return max(1.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0  # an HTTP date: rare for TTS servers, not worth parsing


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:_DETAIL_CHARS] + ("…" if len(text) > _DETAIL_CHARS else "") or "(empty)"


# -- reading a spec ------------------------------------------------------------------------------


def required_url(spec: EngineSpec) -> str:
    """The engine's base URL; a remote engine without one is a configuration error."""
    if not spec.url:
        raise ConfigError(f"engine {spec.name!r} ({spec.kind}) needs a url")
    return spec.url


def voice_list(spec: EngineSpec) -> list[str] | None:
    """`options.voices`: a list of voice ids (or one comma-separated string), or None."""
    voices = spec.options.get("voices")
    if voices is None:
        return None
    if isinstance(voices, str):
        voices = [v.strip() for v in voices.split(",")]
    if not isinstance(voices, list) or not all(isinstance(v, str) for v in voices):
        raise ConfigError(f"engine {spec.name!r}: options.voices must be a list of voice ids")
    return [v for v in voices if v] or None


def string_table(spec: EngineSpec, option: str) -> dict[str, str] | None:
    """An option that maps names to texts (`emotion_prompts`, `emotion_instructions`)."""
    table = spec.options.get(option)
    if not table:
        return None
    if not isinstance(table, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise ConfigError(f"engine {spec.name!r}: options.{option} must map names to texts")
    return dict(table)


def upstream_format(spec: EngineSpec, allowed: tuple[str, ...]) -> str:
    """`options.upstream_format` (default `wav`), one of `allowed`."""
    value = spec.options.get("upstream_format", "wav")
    if value not in allowed:
        raise ConfigError(
            f"engine {spec.name!r}: options.upstream_format must be one of {', '.join(allowed)}"
        )
    return str(value)
