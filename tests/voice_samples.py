"""Synthetic reference samples for voice tests: a harmonic "voice" at a known pitch whose
loudness rises and falls at a known syllable rate, encoded in any upload format."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import soundfile as sf

_SUBTYPES = {"WAV": "PCM_16", "FLAC": "PCM_16", "MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}


def voice_like(
    pitch_hz: float = 120.0,
    syllables_per_second: float = 4.0,
    seconds: float = 2.0,
    fmt: str = "WAV",
    rate: int = 16000,
) -> bytes:
    """A sample with the given median pitch and syllable rate, as `fmt` bytes."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * k * pitch_hz * t) / k for k in range(1, 6))
    envelope = (0.5 - 0.5 * np.cos(2 * np.pi * syllables_per_second * t)) ** 2
    samples = (tone * envelope * 0.3 * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=_SUBTYPES[fmt])
    return buffer.getvalue()


def pcm_fingerprints(sample: bytes, width: int = 48, count: int = 8) -> list[bytes]:
    """Windows of a sample's bytes that must never appear in any store."""
    step = max(1, (len(sample) - width) // (count + 1))
    return [sample[i : i + width] for i in range(step, len(sample) - width, step)][:count]


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()
