"""The value types and protocols every layer shares, so nobody imports the gateway for a type.

Read it top-down, the way a request travels:

- `SpeechRequest`: what a client asks for, validated and normalized at the edge;
- `Engine`, `SynthesisJob`, `Reference`, `VoiceInfo`: what an upstream TTS engine is asked;
- `ResolvedVoice`, `Plan`: a request resolved against one engine and one voice, with its
  `CacheKey` (built in `keys.py`);
- `Entry`, `EntryMeta`, `Tier`, `TierStats`: what a cache tier stores and the tier protocol;
- `SpeechResult`, `Status`: the answer, and how it was obtained; `SpeechStream`: the answer
  as a stream of bytes;
- `VoiceResolver`, `Admission`, `GatewayObserver`, `FillLock`: the collaborators the gateway
  is given by the composition root.

Two kinds of protocol, one definition each. `Engine` and `Tier` are small abstract base
classes: their implementations subclass them and inherit default behaviour (`accepts_voice`,
`key_options`, `touch`, `find`, `aclose`…), which a `typing.Protocol` could only offer through
a second, parallel base class. The gateway's collaborators are `Protocol`s: their
implementations live in higher layers (metrics, rate limits, the voice registry, Redis) and
share no code, so structural typing is all they need.

One module per stage: `requests`, `engines`, `entries`, `results`, `ports`; import the names
from `voicecache.model`, which re-exports them all. The package sits below every other layer:
it imports only `codecs`, `errors` and `keys`.
"""

from voicecache.keys import CacheKey  # part of the model: every plan carries one
from voicecache.model.engines import (
    Engine,
    Plan,
    Reference,
    ResolvedVoice,
    SynthesisJob,
    VoiceInfo,
)
from voicecache.model.entries import (
    MAGIC,
    Entry,
    EntryMeta,
    Tier,
    TierStats,
    checksum,
    read_header,
)
from voicecache.model.ports import (
    Acquired,
    Admission,
    FillLock,
    GatewayObserver,
    Lease,
    VoiceResolver,
)
from voicecache.model.requests import (
    EMOTION_PATTERN,
    ENGINE_PATTERN,
    MAX_SPEED,
    MAX_TAGS,
    MIN_SPEED,
    RAW_TEXT_SLACK,
    TAG_PATTERN,
    VOICE_PATTERN,
    SegmentMode,
    SpeechRequest,
)
from voicecache.model.results import (
    SpeechResult,
    SpeechStream,
    Status,
)

__all__ = [
    "EMOTION_PATTERN",
    "ENGINE_PATTERN",
    "MAGIC",
    "MAX_SPEED",
    "MAX_TAGS",
    "MIN_SPEED",
    "RAW_TEXT_SLACK",
    "TAG_PATTERN",
    "VOICE_PATTERN",
    "Acquired",
    "Admission",
    "CacheKey",
    "Engine",
    "Entry",
    "EntryMeta",
    "FillLock",
    "GatewayObserver",
    "Lease",
    "Plan",
    "Reference",
    "ResolvedVoice",
    "SegmentMode",
    "SpeechRequest",
    "SpeechResult",
    "SpeechStream",
    "Status",
    "SynthesisJob",
    "Tier",
    "TierStats",
    "VoiceInfo",
    "VoiceResolver",
    "checksum",
    "read_header",
]
