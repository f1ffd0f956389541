"""The engine protocol, re-exported from `voicecache.model` where it is defined.

`Engine` (the small base class every upstream TTS engine subclasses), `SynthesisJob`,
`Reference` and `VoiceInfo` live in `model.py` so that every layer can name them without
importing the engines package. Import them from `voicecache.model`; this module remains only
so that code written against the old location keeps working.
"""

from __future__ import annotations

from voicecache.model import Engine as Engine
from voicecache.model import Reference as Reference
from voicecache.model import SynthesisJob as SynthesisJob
from voicecache.model import VoiceInfo as VoiceInfo
