"""Joining renders: inner silence trimmed to the pause, equal-power fades, one sample rate."""

from __future__ import annotations

import numpy as np
import pytest

from voicecache.cache.segments.join import fade_edges, join, trim
from voicecache.codecs import Audio

RATE = 16_000


def clip(lead: float, tone: float, tail: float, rate: int = RATE, level: float = 8000) -> Audio:
    """Silence, a 300 Hz tone starting at its peak (an abrupt edge), silence."""
    t = np.arange(round(tone * rate)) / rate
    body = level * np.cos(2 * np.pi * 300 * t)
    samples = np.concatenate([np.zeros(round(lead * rate)), body, np.zeros(round(tail * rate))])
    return Audio(samples.astype(np.int16), rate)


def test_inner_silence_becomes_exactly_the_pause_and_outer_edges_stay() -> None:
    a, b = clip(0.2, 0.5, 0.4), clip(0.3, 0.25, 0.1)
    joined = join([a, b], [0.12])
    # 0.2 lead (kept) + 0.5 tone + 0.12 pause + 0.25 tone + 0.1 tail (kept)
    assert joined.sample_rate == RATE
    assert len(joined.samples) == pytest.approx((0.2 + 0.5 + 0.12 + 0.25 + 0.1) * RATE, abs=4)
    gap = np.abs(joined.samples[round(0.7 * RATE) + 2 : round(0.82 * RATE) - 2])
    assert gap.max() == 0


def test_every_inner_edge_fades_from_and_to_zero() -> None:
    # a ends near the trough (91.5 periods), b starts at the peak: a hard join would click.
    a, b = clip(0.0, 0.305, 0.0), clip(0.0, 0.3, 0.0)
    joined = join([a, b], [0.0]).samples.astype(np.int32)
    loud_a = len(trim(a.samples.astype(np.float64), start=False, end=True))
    assert joined[loud_a - 1] == 0 and joined[loud_a] == 0  # a fades out, b fades in
    # A hard join would step from about 0 to the peak (8000); faded, no step is larger than
    # the tone's own largest step (2π·300/16000 of the peak).
    own_step = 8000 * 2 * np.pi * 300 / RATE
    assert np.abs(np.diff(a.samples.astype(np.int32))).max() <= own_step
    assert np.abs(np.diff(joined)).max() <= own_step * 1.05
    assert np.abs(np.diff(np.concatenate([a.samples, b.samples]).astype(np.int32))).max() > 15000


def test_clips_of_other_rates_are_resampled_to_the_first() -> None:
    joined = join([clip(0, 0.5, 0), clip(0, 0.5, 0, rate=24_000)], [0.1])
    assert joined.sample_rate == RATE
    assert len(joined.samples) == pytest.approx(1.1 * RATE, abs=4)


def test_a_silent_clip_adds_only_its_pause() -> None:
    silent = Audio(np.zeros(RATE, dtype=np.int16), RATE)
    joined = join([clip(0, 0.5, 0), silent, clip(0, 0.5, 0)], [0.1, 0.1])
    assert len(joined.samples) == pytest.approx(1.2 * RATE, abs=4)


def test_trim_and_fade_helpers() -> None:
    samples = np.concatenate([np.zeros(100), np.full(50, 1000.0), np.full(30, 5.0)])
    assert len(trim(samples, start=True, end=True)) == 50
    assert len(trim(samples, start=False, end=True)) == 150
    assert len(trim(np.zeros(10), start=True, end=False)) == 0
    faded = fade_edges(np.ones(100), 10, start=True, end=True)
    # A quarter sine in and a quarter cosine out: equal-power curves (sin² + cos² = 1).
    quarter = np.sin(0.5 * np.pi * np.arange(10) / 10)
    assert np.allclose(faded[:10], quarter) and np.allclose(faded[-10:], quarter[::-1])
    assert faded[0] == 0 and faded[-1] == 0 and faded[50] == 1
    assert fade_edges(np.ones(3), 10, start=True, end=True)[0] == 0  # at most half the clip


def test_pauses_must_fit_the_clips() -> None:
    with pytest.raises(ValueError, match="pauses"):
        join([clip(0, 0.1, 0), clip(0, 0.1, 0)], [])
    with pytest.raises(ValueError, match="nothing"):
        join([], [])
