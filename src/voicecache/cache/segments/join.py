"""Joining segment renders into one clip, on PCM at one sample rate, without clicks or gaps.

Engines pad each render with silence; laid end to end, two renders would leave a gap that
reads as a second of dead air, and where two waveforms meet at different phases the step is
heard as a click. So, at every join:

- the silence at the inner edges is trimmed to the first and last sample louder than a small
  threshold (5 % of the clip's peak, at most -44 dBFS), and exactly `pause` seconds of silence
  go in between (the sentence pause, the comma pause, or none inside a template line);
- each inner edge gets a short equal-power fade (a quarter sine in, a quarter cosine out,
  10 ms), so every waveform starts from and ends at zero.

The outer edges (the start of the first clip, the end of the last) are kept as the engine made
them, exactly as a render of the whole text would start and end. Clips of another sample rate
are resampled to the first clip's rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from voicecache.codecs import Audio, resample

FADE_SECONDS = 0.010
# A sample is "sound" above this share of the clip's peak, and always above the floor.
_RELATIVE_THRESHOLD = 0.05
_ABSOLUTE_THRESHOLD = 200  # of 32767: -44 dBFS
_MIN_THRESHOLD = 8

Samples = npt.NDArray[np.float64]


def join(clips: Sequence[Audio], pauses: Sequence[float], *, fade: float = FADE_SECONDS) -> Audio:
    """One clip from `clips`, with `pauses[i]` seconds of silence between clip i and i + 1."""
    if not clips:
        raise ValueError("nothing to join")
    if len(pauses) != len(clips) - 1:
        raise ValueError(f"{len(clips)} clips need {len(clips) - 1} pauses, not {len(pauses)}")
    rate = clips[0].sample_rate
    last = len(clips) - 1
    parts = [
        place(
            clip, rate, first=index == 0, pause=None if index == last else pauses[index], fade=fade
        )
        for index, clip in enumerate(clips)
    ]
    return Audio(np.concatenate(parts), rate)


def place(
    clip: Audio, rate: int, *, first: bool, pause: float | None, fade: float = FADE_SECONDS
) -> npt.NDArray[np.int16]:
    """One clip as it goes into a joined clip at `rate`: its inner edges trimmed and faded,
    followed by `pause` seconds of silence (None: the last clip, its end kept as it is).
    Joining clip by clip (a stream) gives exactly the samples of `join`."""
    samples = resample(clip, rate).samples.astype(np.float64)
    last = pause is None
    samples = trim(samples, start=not first, end=not last)
    samples = fade_edges(samples, max(1, round(fade * rate)), start=not first, end=not last)
    if pause is not None:
        samples = np.concatenate([samples, np.zeros(max(0, round(pause * rate)))])
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def sound_threshold(samples: Samples) -> float:
    """The level above which a sample counts as sound rather than silence."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return max(_MIN_THRESHOLD, min(_ABSOLUTE_THRESHOLD, peak * _RELATIVE_THRESHOLD))


def trim(samples: Samples, *, start: bool, end: bool) -> Samples:
    """`samples` without the silence at its start and/or end (all of it, if all is silent)."""
    loud = np.flatnonzero(np.abs(samples) > sound_threshold(samples))
    if len(loud) == 0:
        return samples[:0] if (start or end) else samples
    first = int(loud[0]) if start else 0
    stop = int(loud[-1]) + 1 if end else len(samples)
    return samples[first:stop]


def fade_edges(samples: Samples, length: int, *, start: bool, end: bool) -> Samples:
    """Equal-power fades over `length` samples (at most half the clip) at the chosen edges."""
    length = min(length, len(samples) // 2)
    if length == 0:
        return samples
    # Quarter sine and cosine: sin² + cos² = 1, so the fades are equal-power, and each inner
    # edge starts or ends at exactly zero.
    ramp = np.sin(0.5 * np.pi * np.arange(length) / length)
    faded = samples.copy()
    if start:
        faded[:length] *= ramp
    if end:
        faded[-length:] *= ramp[::-1]
    return faded
