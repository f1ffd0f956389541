"""Format variants: audio in a format other than the canonical one, transcoded from it.

Audio is stored once per key in the canonical codec (`storage_codec`, FLAC by default) and,
for any other format a client asks for, as a variant beside it (`<key>.<format>`), so a hit is
always a plain read of stored bytes and never transcodes. A request for a new format of a line
that is already cached transcodes from the canonical entry here, without calling the engine.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from voicecache import codecs
from voicecache.cache.tiers.tiered import Lookup, TieredCache
from voicecache.codecs import AudioFormat
from voicecache.model import Entry, EntryMeta, SpeechResult, checksum


def variant_meta(source: EntryMeta, fmt: AudioFormat, data: bytes) -> EntryMeta:
    """The header of `data`, the audio of `source` transcoded to `fmt`."""
    rate = codecs.PCM_RATE if fmt == "pcm" else source.sample_rate
    if fmt == "opus" and rate not in codecs.OPUS_RATES:
        rate = codecs.PCM_RATE
    return replace(source, format=fmt, size=len(data), checksum=checksum(data), sample_rate=rate)


async def derive_variant(
    cache: TieredCache, digest: str, canonical: Lookup, fmt: AudioFormat, since: int
) -> SpeechResult:
    """Transcode a cached canonical entry to `fmt`, store it as the variant, and serve it.

    `since` is the cache generation at the caller's lookup: a purge that ran after it keeps
    the variant from being stored (see `tiers/tiered.py`)."""
    source = canonical.entry
    data = await asyncio.to_thread(codecs.transcode, source.data, source.meta.format, fmt)
    entry = Entry(data, variant_meta(source.meta, fmt, data))
    await cache.set(f"{digest}.{fmt}", entry, since)
    return SpeechResult.of(entry, "HIT", canonical.tier)
