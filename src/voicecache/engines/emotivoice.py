"""EmotiVoice, through the HTTP API of its `openaiapi.py` (FastAPI, port 8000 by default).

Wire format: `POST /v1/audio/speech` with JSON `{"input", "voice": "<speaker id>", "prompt":
"<emotion or style text>", "language", "model", "response_format", "speed"}`; the answer is
raw audio with `Content-Type: audio/<format>` (so `audio/mp3`, never `audio/mpeg`), 16 kHz
16-bit mono. We ask for `wav` by default (lossless, no decoder quirks; `upstream_format`
may choose `flac` or `mp3` to save bandwidth) and store audio in our own canonical codec.

Our `emotion` becomes EmotiVoice's `prompt` through a table (`emotion_prompts`, defaults
below, overridable in settings). The prompt text is part of the cache key, so editing the
table never serves audio made with the old prompt.

Speed: EmotiVoice renders at its natural rate and time-stretches afterwards. With
`derive_speed` on, voicecache does the same itself: the engine only ever renders speed 1.0
upstream and other speeds are stretched locally from that render (which the gateway caches
and reuses, so one engine call serves every speed of a line). Our stretch resamples, so the
pitch moves with the tempo, unlike EmotiVoice's rubberband: a trade of exactness for engine
calls, hence off by default; keys of derived audio differ from keys of exact renders.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from voicecache.codecs import Audio, time_stretch
from voicecache.engines.remote import (
    RemoteEngine,
    required_url,
    string_table,
    upstream_format,
    voice_list,
)
from voicecache.engines.spec import EngineSpec
from voicecache.errors import EngineError, UnknownVoice
from voicecache.model import SynthesisJob, VoiceInfo

SPEECH_PATH = "/v1/audio/speech"
DEFAULT_MODEL = "emoti-voice"
DEFAULT_LANGUAGE = "zh_us"
# EmotiVoice's prompts are free text; these are the style words its README uses.
DEFAULT_EMOTION_PROMPTS: dict[str, str] = {
    "neutral": "",
    "happy": "Happy",
    "sad": "Sad",
    "angry": "Angry",
    "surprised": "Surprise",
    "fearful": "Fear",
    "disgusted": "Disgust",
    "excited": "Excited",
    "calm": "Calm",
}
# A few of the 2,000+ LibriTTS speaker ids EmotiVoice ships; any numeric id is accepted
# unless a list is configured.
DEFAULT_VOICES: tuple[str, ...] = ("8051", "9017", "6097", "1088", "92", "11614")
SPEAKER_ID = re.compile(r"^[0-9]{1,8}$")
UPSTREAM_FORMATS = ("wav", "flac", "mp3")
# EmotiVoice answers an unknown speaker id with a bare 500, like a crash. A 500 for a speaker
# that never worked, while other speakers worked this recently, is taken as "unknown speaker"
# (422, no retry, nothing against the circuit breaker), so one client asking for bad ids
# cannot open the breaker for everyone. Configure `voices` to refuse bad ids up front.
UNKNOWN_SPEAKER_WINDOW = 300.0
_MAX_KNOWN_GOOD = 10_000


class EmotiVoiceEngine(RemoteEngine):
    """An EmotiVoice server. Voices are speaker ids (`"8051"`)."""

    def __init__(
        self,
        *,
        name: str = "emotivoice",
        url: str,
        model_version: str = "emotivoice-1",
        model: str = DEFAULT_MODEL,
        language: str = DEFAULT_LANGUAGE,
        emotion_prompts: Mapping[str, str] | None = None,
        voices: Sequence[str] | None = None,
        derive_speed: bool = False,
        upstream_format: str = "wav",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_connections: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            name=name,
            model_version=model_version,
            base_url=url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            transport=transport,
        )
        self.model = model
        self.language = language
        prompts = dict(DEFAULT_EMOTION_PROMPTS)
        prompts.update({k.strip().lower(): v for k, v in (emotion_prompts or {}).items()})
        self.emotion_prompts = prompts
        self._configured_voices = tuple(voices) if voices else None
        self._voices = [
            VoiceInfo(v, f"EmotiVoice speaker {v}")
            for v in self._configured_voices or DEFAULT_VOICES
        ]
        self.derive_speed = derive_speed
        if upstream_format not in UPSTREAM_FORMATS:
            raise ValueError(f"upstream_format must be one of {UPSTREAM_FORMATS}")
        self.upstream_format = upstream_format
        self._clock = clock
        self._good_voices: set[str] = set()
        self._last_success = float("-inf")

    def voices(self) -> Sequence[VoiceInfo]:
        return self._voices

    def emotions(self) -> Sequence[str]:
        return tuple(self.emotion_prompts)

    def accepts_voice(self, voice: str) -> bool:
        if self._configured_voices is not None:
            return voice in self._configured_voices
        return bool(SPEAKER_ID.match(voice))

    def key_options(self, job: SynthesisJob) -> dict[str, Any]:
        # The prompt text and language change the audio; the emotion name alone does not
        # say which prompt was sent once the table is edited.
        options: dict[str, Any] = {
            "prompt": self.emotion_prompts.get(job.emotion, ""),
            "language": self.language,
        }
        if self.derives_speed(job):
            options["derived_speed"] = True
        return options

    def derives_speed(self, job: SynthesisJob) -> bool:
        return self.derive_speed and job.speed != 1.0

    def request_body(self, job: SynthesisJob) -> dict[str, Any]:
        """The JSON sent upstream for `job` (only fields EmotiVoice's model declares)."""
        if job.emotion not in self.emotion_prompts:
            raise EngineError(f"engine {self.name} has no prompt for emotion {job.emotion!r}")
        return {
            "input": job.text,
            "voice": job.voice,
            "prompt": self.emotion_prompts[job.emotion],
            "language": self.language,
            "model": self.model,
            "response_format": self.upstream_format,
            "speed": 1.0 if self.derive_speed else job.speed,
        }

    async def synthesize(self, job: SynthesisJob) -> Audio:
        try:
            audio = await self._post_audio(SPEECH_PATH, self.request_body(job))
        except EngineError as exc:
            if self._looks_like_unknown_speaker(job.voice, exc):
                raise UnknownVoice(
                    f"engine {self.name} failed (HTTP 500) on speaker {job.voice!r} while it "
                    f"serves other speakers: probably an unknown speaker id"
                ) from exc
            raise
        if len(self._good_voices) >= _MAX_KNOWN_GOOD:
            self._good_voices.clear()
        self._good_voices.add(job.voice)
        self._last_success = self._clock()
        if self.derives_speed(job):
            # Called directly (not through the gateway, which reuses the cached render).
            audio = time_stretch(audio, job.speed)
        return audio

    def _looks_like_unknown_speaker(self, voice: str, exc: EngineError) -> bool:
        return (
            exc.upstream_status == 500
            and self._configured_voices is None
            and voice not in self._good_voices
            and self._clock() - self._last_success < UNKNOWN_SPEAKER_WINDOW
        )


def build(spec: EngineSpec) -> EmotiVoiceEngine:
    """Factory of kind `emotivoice` (entry point group `voicecache.engines`).

    Options: `language`, `emotion_prompts` (emotion → prompt text, over the defaults),
    `voices` (speaker ids to accept), `derive_speed`, `upstream_format` (wav, flac, mp3)."""
    options = spec.options
    return EmotiVoiceEngine(
        name=spec.name,
        url=required_url(spec),
        model_version=spec.model_version or "emotivoice-1",
        model=spec.model or DEFAULT_MODEL,
        language=str(options.get("language", DEFAULT_LANGUAGE)),
        emotion_prompts=string_table(spec, "emotion_prompts"),
        voices=voice_list(spec),
        derive_speed=bool(options.get("derive_speed", False)),
        upstream_format=upstream_format(spec, UPSTREAM_FORMATS),
        timeout=spec.timeout,
        connect_timeout=spec.connect_timeout,
        max_connections=spec.max_concurrency,
    )
