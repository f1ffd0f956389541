"""Segments and templates: texts spoken as cached pieces, so the engine is paid only for
sentences and template slots it has never spoken (opt-in; exact caching is the default).

- `split.py`: where a text may be cut (sentence ends; commas of over-long sentences);
- `templates.py`: `[[templates]]` patterns: fixed parts shared by everyone, personal slots;
- `join.py`: renders joined on PCM: inner silence trimmed to the pause, equal-power fades;
- `speaker.py`: the orchestration, on top of the gateway (each piece an ordinary request).
"""

from voicecache.cache.segments.speaker import SegmentConfig, SegmentSpeaker
from voicecache.cache.segments.split import Piece, split_text
from voicecache.cache.segments.templates import Template

__all__ = ["Piece", "SegmentConfig", "SegmentSpeaker", "Template", "split_text"]
