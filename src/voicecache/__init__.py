"""voicecache: a caching gateway for text-to-speech."""

from __future__ import annotations

__version__ = "0.1.0"
