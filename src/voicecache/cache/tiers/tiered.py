"""Tiers composed fastest first: read down, promote hits up, write through.

This is the one place that decides freshness (`expires_at`) and staleness (`stale_until`), and
the one place that keeps a failing tier from failing a request: every tier error is counted
and treated as a miss (reads) or skipped (writes), so a dead Redis or a full disk degrades the
cache but never the answer.

It is also where purges meet concurrent traffic. A purge (`cache/invalidation/`) announces itself
with `begin_purge(scope)` and `end_purge(...)`, each of which bumps `generation`. Every read
and write remembers the generation it started at; an entry that matches a purge which was
running at any moment since then is treated as absent when read and is not written (or is
deleted again right after a write that raced the purge). So a promotion, a sliding touch or
an engine fill that started before or during a purge can never put purged audio back, and
from the moment a purge begins its entries are no longer served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from voicecache.cache.tiers.memory import MemoryTier
from voicecache.model import Entry, EntryMeta, Tier, checksum

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A found entry, the tier it came from, and whether it is still fresh."""

    entry: Entry
    tier: str
    fresh: bool


class PurgeScope(Protocol):
    """What a purge removes (see `cache/invalidation/filter.py`)."""

    def matches(self, entry_id: str, meta: EntryMeta) -> bool: ...


@dataclass(slots=True)
class PurgeRecord:
    """A purge's scope and the generations at which it started and ended."""

    scope: PurgeScope
    started: int
    ended: int | None = None


# Tells other processes about a purge done here: its scope and the tiers it covered.
PurgeAnnouncer = Callable[[PurgeScope, Sequence[Tier]], Awaitable[None]]

# Finished purges remembered for racing operations; older ones fold into a horizon.
_KEEP_PURGES = 64
# Verified stored copies remembered for cheap reads (~200 bytes each).
_KEEP_CHECKED = 100_000


class TieredCache:
    """An ordered list of tiers behaving as one cache."""

    def __init__(self, tiers: Sequence[Tier], clock: Callable[[], float] = time.time) -> None:
        if not tiers:
            raise ValueError("at least one tier is needed")
        self.tiers = list(tiers)
        self.clock = clock
        self.memory = next((t for t in self.tiers if isinstance(t, MemoryTier)), None)
        self.errors: dict[str, int] = {tier.name: 0 for tier in self.tiers}
        self._background: set[asyncio.Task[None]] = set()
        self.generation = 0
        self._purges: list[PurgeRecord] = []
        self._active: list[PurgeRecord] = []
        # Operations that started before this generation are checked against forgotten
        # purges too: they are treated as purged (refetched), never as safe.
        self._horizon = 0
        # Set by the purge feed (`invalidation.feed.attach`): purges here reach other processes.
        self.announcer: PurgeAnnouncer | None = None
        # Stored copies whose checksum a cheap read verified (insertion order: oldest first).
        self._checked: dict[tuple[str, str, str], None] = {}

    # -- purge fencing -------------------------------------------------------------------------

    def begin_purge(self, scope: PurgeScope) -> PurgeRecord:
        """Announce a purge: from now on its entries are neither served nor written."""
        self.generation += 1
        record = PurgeRecord(scope, self.generation)
        self._purges.append(record)
        self._active.append(record)
        return record

    def end_purge(self, record: PurgeRecord) -> None:
        """The purge has removed its entries from every tier."""
        self.generation += 1
        record.ended = self.generation
        self._active.remove(record)
        while len(self._purges) > _KEEP_PURGES:
            oldest = next((p for p in self._purges if p.ended is not None), None)
            if oldest is None:
                break
            self._purges.remove(oldest)
            self._horizon = max(self._horizon, oldest.ended or 0)

    def purged(self, since: int, entry_id: str, meta: EntryMeta) -> bool:
        """Whether a purge running at any time after generation `since` covers the entry."""
        if since == self.generation and not self._active:
            return False  # the common case: no purge in between
        if since < self._horizon:
            return True
        return any(
            (record.ended is None or record.ended > since) and record.scope.matches(entry_id, meta)
            for record in self._purges
        )

    def peek_memory(self, entry_id: str) -> Lookup | None:
        """Synchronous fresh-only lookup in the memory tier: the fast hit path."""
        if self.memory is None:
            return None
        entry = self.memory.peek(entry_id)
        if entry is None:
            return None
        expires_at = entry.meta.expires_at
        if expires_at is not None and self.clock() >= expires_at:
            return None
        if self._active and self.purged(self.generation, entry_id, entry.meta):
            return None
        return Lookup(entry, self.memory.name, True)

    async def get(self, entry_id: str, *, cheap: bool = False) -> Lookup | None:
        """The first live entry from the fastest tier that has it, promoted to faster tiers.

        An entry past its grace period counts as absent (and is deleted where found), and so
        does an entry covered by a purge that ran while it was being read.

        `cheap` (the fast lane): tiers check headers and lengths only (`Tier.read`) and the
        checksum of each stored copy is verified here once per process, so a copy damaged
        at rest is dropped at its first read, and later hits skip hashing the audio."""
        now = self.clock()
        since = self.generation
        for index, tier in enumerate(self.tiers):
            try:
                entry = await (tier.read(entry_id) if cheap else tier.get(entry_id))
            except Exception as exc:  # a tier failure is a miss, never an error
                self._count_error(tier, "get", exc)
                continue
            if entry is None:
                continue
            if cheap and tier is not self.memory and not self._verified(tier, entry_id, entry):
                self._count_error(tier, "get", ValueError(f"checksum mismatch for {entry_id}"))
                self._spawn(self._delete_in(tier, entry_id))
                continue
            meta = entry.meta
            if meta.stale_until is not None and now >= meta.stale_until:
                self._spawn(self._delete_in(tier, entry_id))
                continue
            if self.purged(since, entry_id, meta):
                continue
            if index:
                self._spawn(self._write(self.tiers[:index], entry_id, entry, since))
            fresh = meta.expires_at is None or now < meta.expires_at
            return Lookup(entry, tier.name, fresh)
        return None

    def _verified(self, tier: Tier, entry_id: str, entry: Entry) -> bool:
        """Whether this stored copy's checksum holds: computed on its first read in this
        process, remembered by (tier, id, checksum) afterwards (a rewrite is a new copy)."""
        copy = (tier.name, entry_id, entry.meta.checksum)
        if copy in self._checked:
            return True
        if checksum(entry.data) != entry.meta.checksum:
            return False
        self._checked[copy] = None
        if len(self._checked) > _KEEP_CHECKED:
            self._checked.pop(next(iter(self._checked)))  # the oldest
        return True

    async def set(self, entry_id: str, entry: Entry, since: int | None = None) -> None:
        """Write through to every tier concurrently.

        `since` is the generation at which the caller started making the entry (its lookup):
        if a purge covering the entry ran after that, the entry is not stored."""
        await self._write(self.tiers, entry_id, entry, self.generation if since is None else since)

    def touch(self, entry_id: str, meta: EntryMeta) -> None:
        """Update the header (expiry) of an entry everywhere, in the background."""
        since = self.generation
        for tier in self.tiers:
            self._spawn(self._touch(tier, entry_id, meta, since))

    async def _touch(self, tier: Tier, entry_id: str, meta: EntryMeta, since: int) -> None:
        if self.purged(since, entry_id, meta):
            return
        await self._guard(tier, "touch", tier.touch(entry_id, meta))
        if self.purged(since, entry_id, meta):
            # A purge ran while the tier rewrote the entry: the rewrite may have revived it.
            await self._delete_in(tier, entry_id)

    async def delete(self, entry_id: str) -> dict[str, int]:
        """Remove from every tier; returns bytes freed per tier."""
        freed: dict[str, int] = {}
        for tier in self.tiers:
            try:
                freed[tier.name] = await tier.delete(entry_id)
            except Exception as exc:
                self._count_error(tier, "delete", exc)
                freed[tier.name] = 0
        return freed

    async def _write(self, tiers: Sequence[Tier], entry_id: str, entry: Entry, since: int) -> None:
        if self.purged(since, entry_id, entry.meta):
            return
        await asyncio.gather(
            *(self._guard(tier, "set", tier.set(entry_id, entry)) for tier in tiers)
        )
        if self.purged(since, entry_id, entry.meta):
            # A purge passed these tiers while we wrote: undo, so it stays purged.
            await asyncio.gather(*(self._delete_in(tier, entry_id) for tier in tiers))

    async def _delete_in(self, tier: Tier, entry_id: str) -> None:
        await self._guard(tier, "delete", tier.delete(entry_id))

    async def _guard(self, tier: Tier, operation: str, work: Awaitable[object]) -> None:
        try:
            await work
        except Exception as exc:
            self._count_error(tier, operation, exc)

    def _count_error(self, tier: Tier, operation: str, exc: BaseException) -> None:
        self.errors[tier.name] = self.errors.get(tier.name, 0) + 1
        log.warning("cache tier %s failed to %s: %s", tier.name, operation, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background promotions and touches (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        for tier in self.tiers:
            try:
                await tier.aclose()
            except Exception as exc:
                self._count_error(tier, "close", exc)
