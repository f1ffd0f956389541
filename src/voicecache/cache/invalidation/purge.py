"""Explicit invalidation: remove cached audio by key, voice, tag, engine, model version, age,
expiry, or all of it, from every tier, and report what went from each.

`purge(cache, PurgeFilter(...))` is shared by `DELETE /admin/cache`, `voicecache purge` and the
background sweeper. It announces itself to the `TieredCache` (`begin_purge`/`end_purge`), which
fences concurrent traffic: from the first moment of a purge its entries are not served, and no
promotion, touch or engine fill that raced it can store them again (see `tiers/tiered.py`).

How a tier is searched, cheapest first:

- by key: the key's few storage ids (one per format) are deleted directly, no search;
- by voice or tag: the tier's optional secondary index, `tier.find(voice=..., tag=...)`
  (Redis keeps one), which returns matching ids, or None for "not indexed";
- otherwise a `scan()` of the tier's headers, deleting matches as it goes and yielding to the
  event loop regularly so requests keep flowing.

In the memory tier a match is re-checked and deleted with no await in between. In the other
tiers, an entry re-stored under the same id between the scan and the delete, with a header
the filter does not cover (possible only for tag, age and expiry filters, since the id fixes
voice, engine and model version), may be deleted too: it costs one re-synthesis, never a
wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicecache.cache.tiers.disk import DiskTier
from voicecache.cache.tiers.memory import MemoryTier
from voicecache.cache.tiers.tiered import PurgeScope, TieredCache
from voicecache.codecs import FORMATS
from voicecache.errors import InvalidRequest
from voicecache.model import TAG_PATTERN, VOICE_PATTERN, EntryMeta, Tier
from voicecache.settings import parse_duration

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[0-9a-f]{64}$")
_BATCH = 64  # deletes in flight per tier, and entries scanned between yields to the loop


class InvalidFilter(InvalidRequest):
    """A purge filter that is missing, malformed or contradictory."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class PurgeFilter:
    """Which entries a purge removes: every given condition must hold (AND).

    `older_than` (seconds) and `expired` are judged at `now`, the moment the purge was asked
    for. `expired` means past its TTL (`expires_at`), whether or not still within grace;
    pinned entries never expire. `all` matches everything and cannot be combined."""

    key: str | None = None
    voice: str | None = None
    tag: str | None = None
    engine: str | None = None
    model_version: str | None = None
    older_than: float | None = None
    expired: bool = False
    all: bool = False
    now: float = 0.0

    @classmethod
    def create(
        cls,
        *,
        now: float,
        key: str | None = None,
        voice: str | None = None,
        tag: str | None = None,
        engine: str | None = None,
        model_version: str | None = None,
        older_than: str | float | None = None,
        expired: bool = False,
        all_entries: bool = False,
    ) -> PurgeFilter:
        """Validate user input; raises `InvalidFilter` with a readable detail."""
        key = _clean(key)
        if key is not None:
            digest, _, fmt = key.partition(".")
            if not _KEY.match(digest) or (fmt and fmt not in FORMATS):
                raise InvalidFilter(
                    "key must be a 64-character hex cache key, optionally with a format "
                    "suffix such as .wav"
                )
        voice, tag = _clean(voice), _clean(tag)
        if voice is not None and not VOICE_PATTERN.match(voice):
            raise InvalidFilter("voice must be 1-64 letters, digits, '_', '.', '+' or '-'")
        if tag is not None and not TAG_PATTERN.match(tag):
            raise InvalidFilter("tag must be 1-64 letters, digits, '_', '.', ':' or '-'")
        age: float | None = None
        if older_than is not None and str(older_than).strip():
            try:
                age = parse_duration(older_than)
            except ValueError as exc:
                raise InvalidFilter(f"older_than: {exc}") from exc
        flt = cls(
            key=key,
            voice=voice,
            tag=tag,
            engine=_clean(engine),
            model_version=_clean(model_version),
            older_than=age,
            expired=bool(expired),
            all=bool(all_entries),
            now=now,
        )
        if all_entries and flt.conditions():
            raise InvalidFilter("all=true cannot be combined with other filters")
        if not all_entries and not flt.conditions():
            raise InvalidFilter(
                "give at least one filter (key, voice, tag, engine, model_version, older_than, "
                "expired) or ask for all (all=true, --all); a purge without a filter is refused"
            )
        return flt

    def conditions(self) -> dict[str, Any]:
        """The given conditions, by name (for reports)."""
        given: dict[str, Any] = {
            "key": self.key,
            "voice": self.voice,
            "tag": self.tag,
            "engine": self.engine,
            "model_version": self.model_version,
            "older_than": self.older_than,
        }
        found = {name: value for name, value in given.items() if value is not None}
        if self.expired:
            found["expired"] = True
        return found

    def matches(self, entry_id: str, meta: EntryMeta) -> bool:
        """Whether the entry stored under `entry_id` with header `meta` is covered."""
        if self.all:
            return True
        if self.key is not None and entry_id != self.key and entry_id.split(".")[0] != self.key:
            return False
        if self.voice is not None and meta.voice != self.voice:
            return False
        if self.tag is not None and self.tag not in meta.tags:
            return False
        if self.engine is not None and meta.engine != self.engine:
            return False
        if self.model_version is not None and meta.model_version != self.model_version:
            return False
        if self.older_than is not None and meta.created > self.now - self.older_than:
            return False
        return not self.expired or (meta.expires_at is not None and meta.expires_at <= self.now)

    def index_lookups(self) -> dict[str, str] | None:
        """The conditions a tier's secondary index answers, when those are all there are."""
        pairs = (("voice", self.voice), ("tag", self.tag))
        indexed = {name: value for name, value in pairs if value is not None}
        if not indexed or set(self.conditions()) - set(indexed):
            return None
        return indexed


def tier_identity(tier: Tier) -> str:
    """A name that is equal for two tier objects exactly when they hold the same entries."""
    if isinstance(tier, MemoryTier):
        return f"memory:{os.getpid()}:{id(tier)}"
    if isinstance(tier, DiskTier):
        return f"disk:{socket.gethostname()}:{tier.root.resolve()}"
    url, prefix, bucket = (getattr(tier, name, None) for name in ("url", "prefix", "bucket"))
    if bucket is not None:
        return f"{tier.name}:{bucket}:{prefix}"
    if url is not None:
        return f"{tier.name}:{url}:{prefix}"
    return f"{tier.name}:{os.getpid()}:{id(tier)}"


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass(slots=True)
class TierPurge:
    """What one purge removed from one tier."""

    entries: int = 0
    bytes: int = 0
    error: str | None = None


@dataclass(slots=True)
class PurgeReport:
    """Entries and bytes removed per tier (tiers in cache order)."""

    tiers: dict[str, TierPurge] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return sum(tier.entries for tier in self.tiers.values())

    @property
    def bytes(self) -> int:
        return sum(tier.bytes for tier in self.tiers.values())

    @property
    def errors(self) -> dict[str, str]:
        return {name: tier.error for name, tier in self.tiers.items() if tier.error is not None}

    def to_json(self) -> dict[str, Any]:
        return {
            "filter": self.filter,
            "tiers": {
                name: {"entries": tier.entries, "bytes": tier.bytes}
                for name, tier in self.tiers.items()
            },
            "entries": self.entries,
            "bytes": self.bytes,
            "errors": self.errors,
        }


async def purge(
    cache: TieredCache,
    flt: PurgeFilter,
    *,
    tiers: Sequence[Tier] | None = None,
    announce: bool = True,
) -> PurgeReport:
    """Remove every entry `flt` covers from every tier of `cache` (or only from `tiers`),
    then announce the purge to other processes (when the cache has an announcer)."""
    chosen = cache.tiers if tiers is None else list(tiers)
    report = PurgeReport(filter={"all": True} if flt.all else flt.conditions())
    record = cache.begin_purge(flt)
    try:
        results = await asyncio.gather(*(purge_tier(tier, flt) for tier in chosen))
    finally:
        cache.end_purge(record)
    for tier, result in zip(chosen, results, strict=True):
        report.tiers[tier.name] = result
        if result.error is not None:
            cache.errors[tier.name] = cache.errors.get(tier.name, 0) + 1
    log.info("purge %s removed %d entries, %d bytes", report.filter, report.entries, report.bytes)
    if announce and cache.announcer is not None:
        await cache.announcer(flt, [tier for tier in chosen if tier.name not in report.errors])
    return report


async def purge_tier(tier: Tier, scope: PurgeScope) -> TierPurge:
    """Remove the entries `scope` covers from one tier; a tier failure is reported, not raised."""
    result = TierPurge()
    try:
        if isinstance(scope, PurgeFilter) and scope.key is not None:
            await _delete_ids(tier, _key_ids(scope.key), result)
            return result
        if isinstance(scope, PurgeFilter):
            lookups = scope.index_lookups()
            if lookups is not None:
                ids = await _find(tier, lookups)
                if ids is not None:
                    await _delete_ids(tier, ids, result)
                    return result
        await _scan_and_delete(tier, scope, result)
    except Exception as exc:  # a broken tier must not hide what the others removed
        log.warning("purge of tier %s failed: %s", tier.name, exc)
        result.error = str(exc) or type(exc).__name__
    return result


def _key_ids(key: str) -> list[str]:
    if "." in key:
        return [key]
    return [f"{key}.{fmt}" for fmt in FORMATS]


async def _find(tier: Tier, lookups: dict[str, str]) -> list[str] | None:
    """Ids from the tier's secondary index (`Tier.find`), or None when it has none."""
    return await tier.find(**lookups)


async def _delete_ids(tier: Tier, ids: list[str], result: TierPurge) -> None:
    for start in range(0, len(ids), _BATCH):
        freed = await asyncio.gather(*(tier.delete(i) for i in ids[start : start + _BATCH]))
        _count(freed, result)


async def _scan_and_delete(tier: Tier, scope: PurgeScope, result: TierPurge) -> None:
    pending: list[Awaitable[int]] = []
    seen = 0
    async for entry_id, meta in tier.scan():
        seen += 1
        if scope.matches(entry_id, meta):
            if isinstance(tier, MemoryTier):
                # Check and delete with no await in between: a newer entry stored under the
                # same id since the scan (with a header the scope does not cover) is kept.
                current = tier.header(entry_id)
                if current is not None and scope.matches(entry_id, current):
                    _count([tier.remove(entry_id)], result)
            else:
                pending.append(tier.delete(entry_id))
        if len(pending) >= _BATCH or (seen % _BATCH == 0):
            await _flush(pending, result)
            await asyncio.sleep(0)  # let requests run between batches
    await _flush(pending, result)


async def _flush(pending: list[Awaitable[int]], result: TierPurge) -> None:
    if not pending:
        return
    freed = await asyncio.gather(*pending)
    pending.clear()
    _count(freed, result)


def _count(freed: Sequence[int], result: TierPurge) -> None:
    for size in freed:
        if size > 0:
            result.entries += 1
            result.bytes += size
