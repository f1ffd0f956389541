"""Audio formats: PCM in memory, encoding to and decoding from the formats clients ask for.

Everything here is synchronous and CPU-bound; callers run it off the event loop
(`asyncio.to_thread`) except for tiny clips. Only the miss path and the first request for a
new format of a cached line ever encode: a hit serves stored bytes as they are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

from voicecache.errors import EngineError

AudioFormat = Literal["wav", "flac", "mp3", "opus", "pcm"]
FORMATS: tuple[AudioFormat, ...] = ("wav", "flac", "mp3", "opus", "pcm")
CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "pcm": "audio/pcm",
}
# OpenAI's `pcm` is raw 24 kHz 16-bit little-endian mono; Opus only runs at a few rates.
PCM_RATE = 24000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

_SOUNDFILE_ARGS: dict[str, tuple[str, str | None]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono 16-bit PCM samples and their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def resample(audio: Audio, rate: int) -> Audio:
    """Linear-interpolation resampling: plenty for speech between 16 and 48 kHz."""
    if audio.sample_rate == rate or len(audio.samples) == 0:
        return Audio(audio.samples, rate)
    count = max(1, round(len(audio.samples) * rate / audio.sample_rate))
    positions = np.linspace(0, len(audio.samples) - 1, count)
    values = np.interp(positions, np.arange(len(audio.samples)), audio.samples.astype(np.float32))
    return Audio(np.clip(np.round(values), -32768, 32767).astype(np.int16), rate)


def time_stretch(audio: Audio, factor: float) -> Audio:
    """Change tempo by `factor` (2.0 = twice as fast) the way EmotiVoice applies `speed`:
    by resampling the length after synthesis (pitch moves with it)."""
    if factor == 1.0:
        return audio
    stretched = resample(Audio(audio.samples, audio.sample_rate), round(audio.sample_rate / factor))
    return Audio(stretched.samples, audio.sample_rate)


def encode(audio: Audio, fmt: AudioFormat) -> bytes:
    """Encode PCM as `fmt`."""
    if fmt == "pcm":
        return resample(audio, PCM_RATE).samples.astype("<i2").tobytes()
    if fmt == "opus" and audio.sample_rate not in OPUS_RATES:
        audio = resample(audio, PCM_RATE)
    container, subtype = _SOUNDFILE_ARGS[fmt]
    buffer = io.BytesIO()
    with sf.SoundFile(
        buffer, "w", samplerate=audio.sample_rate, channels=1, format=container, subtype=subtype
    ) as out:
        out.write(audio.samples)
    return buffer.getvalue()


def decode(data: bytes, fmt: AudioFormat | None = None) -> Audio:
    """Decode audio bytes of any format soundfile reads (WAV, FLAC, MP3, OGG) into mono PCM.

    `fmt="pcm"` means raw 24 kHz 16-bit little-endian. Raises `EngineError` for bytes that are
    not decodable audio, because the only untrusted audio we decode comes from engines (voice
    uploads validate separately).
    """
    if fmt == "pcm":
        if len(data) % 2:
            raise EngineError("raw PCM has an odd number of bytes")
        return Audio(np.frombuffer(data, dtype="<i2").astype(np.int16), PCM_RATE)
    if not data:
        raise EngineError("empty audio")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise EngineError(f"not decodable audio: {exc}") from exc
    if samples.shape[0] == 0:
        raise EngineError("audio has no samples")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1).astype(np.int16)
    return Audio(np.ascontiguousarray(mono), int(rate))


def transcode(data: bytes, source: AudioFormat, target: AudioFormat) -> bytes:
    """Re-encode stored audio for another format."""
    if source == target:
        return data
    return encode(decode(data, source), target)
