"""Reference samples for voice cloning: validation of an upload by decoding it, and the two
measurements the embedded eSpeak engine can use (median pitch and speaking rate).

Validation never trusts a file's name or declared type: the bytes must decode as WAV, FLAC,
MP3 or OGG within the size and duration limits. The header is read first (`soundfile.info`),
so a file that claims hours of audio is refused before anything is decoded.

The measurements are a documented approximation, not a voice model: median pitch from
frame-wise autocorrelation over voiced frames (60–400 Hz), speaking rate from peaks of the
smoothed energy envelope (roughly one per syllable) over the time speech is active.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from voicecache.codecs import Audio, resample
from voicecache.errors import InvalidSample, PayloadTooLarge

ACCEPTED_FORMATS = {"WAV": "wav", "FLAC": "flac", "MP3": "mp3", "OGG": "ogg"}
_ANALYSIS_RATE = 16000
_FRAME = 640  # 40 ms at 16 kHz: two periods of a 50 Hz voice
_HOP = 160  # 10 ms
_MIN_HZ, _MAX_HZ = 60.0, 400.0
_VOICED_CORRELATION = 0.45


@dataclass(frozen=True, slots=True)
class Sample:
    """A validated reference sample: decoded PCM and what was measured from it."""

    audio: Audio
    format: str
    channels: int
    duration: float
    median_pitch_hz: float | None
    syllables_per_second: float | None

    def settings(self) -> dict[str, float]:
        """The measurements engines read from `Reference.settings`."""
        found: dict[str, float] = {}
        if self.median_pitch_hz is not None:
            found["median_pitch_hz"] = self.median_pitch_hz
        if self.syllables_per_second is not None:
            found["syllables_per_second"] = self.syllables_per_second
        return found


def validate_sample(data: bytes, *, max_bytes: int, max_seconds: float) -> Sample:
    """Decode and measure an uploaded sample; raise a 4xx error with a clear detail."""
    if not data:
        raise InvalidSample("the uploaded file is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the uploaded file is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidSample(
            "the uploaded file is not audio (accepted: WAV, FLAC, MP3, OGG)"
        ) from exc
    kind = ACCEPTED_FORMATS.get(str(info.format))
    if kind is None:
        raise InvalidSample(f"audio format {info.format} is not accepted (WAV, FLAC, MP3, OGG)")
    if info.samplerate <= 0 or not 1 <= info.channels <= 8:
        raise InvalidSample("the uploaded audio has an invalid sample rate or channel count")
    if info.frames <= 0:
        raise InvalidSample("the uploaded audio contains no samples")
    duration = info.frames / info.samplerate
    if duration > max_seconds:
        raise InvalidSample(
            f"the uploaded audio is {duration:.1f} s long; the limit is {max_seconds:g} s"
        )
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidSample(f"the uploaded audio cannot be decoded: {exc}") from exc
    if samples.shape[0] == 0:
        raise InvalidSample("the uploaded audio contains no samples")
    mono = samples.mean(axis=1).astype(np.int16) if samples.shape[1] > 1 else samples[:, 0]
    audio = Audio(np.ascontiguousarray(mono), int(rate))
    pitch, rate_sps = measure(audio)
    return Sample(audio, kind, int(info.channels), round(audio.duration, 3), pitch, rate_sps)


def decode_sample(data: bytes) -> Audio:
    """Decode a stored (already validated) sample to mono PCM."""
    samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    mono = samples.mean(axis=1).astype(np.int16) if samples.shape[1] > 1 else samples[:, 0]
    return Audio(np.ascontiguousarray(mono), int(rate))


def measure(audio: Audio) -> tuple[float | None, float | None]:
    """Median pitch in Hz and speaking rate in syllables per second (None when silent)."""
    signal = resample(audio, _ANALYSIS_RATE).samples.astype(np.float32) / 32768.0
    if len(signal) < _FRAME * 2:
        return None, None
    count = 1 + (len(signal) - _FRAME) // _HOP
    index = np.arange(_FRAME)[None, :] + _HOP * np.arange(count)[:, None]
    frames = signal[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt((frames**2).mean(axis=1))
    loudest = float(np.percentile(energy, 95))
    if loudest < 1e-4:
        return None, None
    # Pitch from clearly voiced frames; speaking time from anything above near-silence, so
    # pauses between phrases do not lower the rate but quiet syllable edges still count.
    pitch = _median_pitch(frames[energy > loudest * 0.1])
    return pitch, _syllable_rate(energy, energy > loudest * 0.02, loudest)


def _median_pitch(frames: np.ndarray) -> float | None:
    if len(frames) == 0:
        return None
    windowed = frames * np.hanning(_FRAME)[None, :]
    spectrum = np.fft.rfft(windowed, n=_FRAME * 2, axis=1)
    correlation = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :_FRAME]
    # Divide out the window's own autocorrelation so long lags are not penalized.
    window_corr = np.correlate(np.hanning(_FRAME), np.hanning(_FRAME), "full")[_FRAME - 1 :]
    correlation = correlation / np.maximum(window_corr / window_corr[0], 1e-3)[None, :]
    zero = correlation[:, :1]
    zero[zero <= 0] = 1.0
    normalized = correlation / zero
    low = int(_ANALYSIS_RATE / _MAX_HZ)
    high = int(_ANALYSIS_RATE / _MIN_HZ)
    band = normalized[:, low:high]
    lags = band.argmax(axis=1)
    peaks = band[np.arange(len(band)), lags]
    voiced = peaks > _VOICED_CORRELATION
    if not voiced.any():
        return None
    f0 = _ANALYSIS_RATE / (lags[voiced] + low)
    return round(float(np.median(f0)), 1)


def _syllable_rate(energy: np.ndarray, active: np.ndarray, loudest: float) -> float | None:
    seconds_active = active.sum() * _HOP / _ANALYSIS_RATE
    if seconds_active < 0.2:
        return None
    # Smooth over ~50 ms, then count local maxima that stand out from the dips around them.
    kernel = np.ones(5) / 5
    envelope = np.convolve(energy, kernel, mode="same")
    threshold = loudest * 0.25
    peaks = 0
    last_peak = -100
    valley = float("inf")
    for i in range(1, len(envelope) - 1):
        value = envelope[i]
        valley = min(valley, value)
        is_peak = value >= envelope[i - 1] and value > envelope[i + 1] and value > threshold
        # At most ~10 syllables a second, and a real dip (to 80 %) between two syllables.
        if is_peak and i - last_peak >= 10 and valley < value * 0.8:
            peaks += 1
            last_peak = i
            valley = value
    if peaks == 0:
        return None
    return round(peaks / seconds_active, 2)
