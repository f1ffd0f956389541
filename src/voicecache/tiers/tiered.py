"""Tiers composed fastest first: read down, promote hits up, write through.

This is the one place that decides freshness (`expires_at`) and staleness (`stale_until`), and
the one place that keeps a failing tier from failing a request: every tier error is counted
and treated as a miss (reads) or skipped (writes), so a dead Redis or a full disk degrades the
cache but never the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from voicecache.tiers.base import Entry, EntryMeta, Tier
from voicecache.tiers.memory import MemoryTier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A found entry, the tier it came from, and whether it is still fresh."""

    entry: Entry
    tier: str
    fresh: bool


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
        return Lookup(entry, self.memory.name, True)

    async def get(self, entry_id: str) -> Lookup | None:
        """The first live entry from the fastest tier that has it, promoted to faster tiers.

        An entry past its grace period counts as absent (and is deleted where found)."""
        now = self.clock()
        for index, tier in enumerate(self.tiers):
            try:
                entry = await tier.get(entry_id)
            except Exception as exc:  # a tier failure is a miss, never an error
                self._count_error(tier, "get", exc)
                continue
            if entry is None:
                continue
            meta = entry.meta
            if meta.stale_until is not None and now >= meta.stale_until:
                self._spawn(self._delete_in(tier, entry_id))
                continue
            if index:
                self._spawn(self._write(self.tiers[:index], entry_id, entry))
            fresh = meta.expires_at is None or now < meta.expires_at
            return Lookup(entry, tier.name, fresh)
        return None

    async def set(self, entry_id: str, entry: Entry) -> None:
        """Write through to every tier concurrently."""
        await self._write(self.tiers, entry_id, entry)

    def touch(self, entry_id: str, meta: EntryMeta) -> None:
        """Update the header (expiry) of an entry everywhere, in the background."""
        for tier in self.tiers:
            self._spawn(self._guard(tier, "touch", tier.touch(entry_id, meta)))

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

    async def _write(self, tiers: Sequence[Tier], entry_id: str, entry: Entry) -> None:
        await asyncio.gather(
            *(self._guard(tier, "set", tier.set(entry_id, entry)) for tier in tiers)
        )

    async def _delete_in(self, tier: Tier, entry_id: str) -> None:
        await self._guard(tier, "delete", tier.delete(entry_id))

    async def _guard(self, tier: Tier, operation: str, work: object) -> None:
        try:
            await work  # type: ignore[misc]
        except Exception as exc:
            self._count_error(tier, operation, exc)

    def _count_error(self, tier: Tier, operation: str, exc: BaseException) -> None:
        self.errors[tier.name] = self.errors.get(tier.name, 0) + 1
        log.warning("cache tier %s failed to %s: %s", tier.name, operation, exc)

    def _spawn(self, work: object) -> None:
        task = asyncio.ensure_future(work)  # type: ignore[arg-type]
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
