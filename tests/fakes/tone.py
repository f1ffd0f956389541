"""A tone engine plugin, for listening proxies: every text is a steady, phase-continuous sine.

Kind `tone` of the entry-point group `voicecache.engines`, installed the way `pip install`
would (`install`: a dist-info with `entry_points.txt` in a site directory on `sys.path`), so
the app builds it through the real registry like any plugin. In process, so it is not wrapped
in `ResilientEngine`; `calls` counts renders and `texts` keeps what it was asked, in order.

Each render is `LEAD` seconds of silence, then `SECONDS_PER_CHAR` per character of a sine at
`FREQUENCY` Hz (amplitude `AMPLITUDE`) that starts and ends at a phase taken from the text,
so two renders laid end to end meet with a step (a click) unless the joiner fades them; then
`LEAD` seconds of silence again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voicecache.codecs import Audio
from voicecache.engines.spec import EngineSpec
from voicecache.model import Engine, SynthesisJob, VoiceInfo

SAMPLE_RATE = 24_000
FREQUENCY = 220.0
AMPLITUDE = 0.5 * 32767
SECONDS_PER_CHAR = 0.04
LEAD = 0.15


def voiced_seconds(text: str) -> float:
    """How long the tone of `text` lasts, without its silences."""
    return round(len(text) * SECONDS_PER_CHAR * SAMPLE_RATE) / SAMPLE_RATE


class ToneEngine(Engine):
    """Renders every text as a tone (see the module docstring)."""

    in_process = True

    def __init__(self, spec: EngineSpec) -> None:
        super().__init__()
        self.name = spec.name
        self.model_version = spec.model_version or "tone-1"
        self.texts: list[str] = []

    def voices(self) -> Sequence[VoiceInfo]:
        return [VoiceInfo("tone", "Tone")]

    def emotions(self) -> Sequence[str]:
        return ["neutral"]

    async def synthesize(self, job: SynthesisJob) -> Audio:
        self.calls += 1
        self.texts.append(job.text)
        digest = hashlib.sha256(job.text.encode()).digest()
        phase = 2 * math.pi * digest[0] / 256
        count = round(voiced_seconds(job.text) * SAMPLE_RATE)
        t = np.arange(count) / SAMPLE_RATE
        tone = AMPLITUDE * np.sin(2 * math.pi * FREQUENCY * t + phase)
        silence = np.zeros(round(LEAD * SAMPLE_RATE))
        samples = np.concatenate([silence, tone, silence])
        return Audio(np.round(samples).astype(np.int16), SAMPLE_RATE)


def build(spec: EngineSpec) -> ToneEngine:
    return ToneEngine(spec)


def install(site: Path) -> None:
    """Make `site` (put it on `sys.path`) hold a distribution declaring the `tone` kind."""
    dist_info = site / "voicecache_tone-0.1.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voicecache-tone\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[voicecache.engines]\ntone = tests.fakes.tone:build\n"
    )
