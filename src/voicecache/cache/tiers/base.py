"""The tier protocol and what tiers store, re-exported from `voicecache.model`.

`Tier` (the small async base class every cache tier subclasses), `TierStats`, `Entry`,
`EntryMeta` and the entry serialization (`MAGIC`, `read_header`, `checksum`) live in
`model.py`, so every layer can name them without importing the cache. Import them from
`voicecache.model`; this module remains only so that code written against the old location
keeps working.
"""

from __future__ import annotations

from voicecache.model import MAGIC as MAGIC
from voicecache.model import Entry as Entry
from voicecache.model import EntryMeta as EntryMeta
from voicecache.model import Tier as Tier
from voicecache.model import TierStats as TierStats
from voicecache.model import checksum as checksum
from voicecache.model import read_header as read_header
