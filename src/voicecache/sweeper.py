"""The background sweeper: removes unreachable generations of audio from every tier.

An entry is unreachable when no request can ever hit it again: its engine's model version has
changed (`VOICECACHE_<ENGINE>_MODEL_VERSION` is part of the key, so a bump makes every old key
unreachable), or it is past its grace period (`stale_until`), when it can no longer even be
served stale. Entries of engines that are no longer configured are left alone: configuring
the engine again would make them reachable.

The sweep runs every `sweep_interval` seconds in the app's event loop. It scans tier by tier
and yields to the loop between small batches (see `invalidation.purge_tier`), so requests are
never blocked behind it; a failure is logged and the next sweep tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from voicecache.gateway import Gateway
from voicecache.invalidation import PurgeReport, purge_tier
from voicecache.tiers.base import EntryMeta
from voicecache.tiers.tiered import TieredCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The sweeper's scope: old model versions and entries past their grace period."""

    model_versions: Mapping[str, str]
    now: float

    def matches(self, entry_id: str, meta: EntryMeta) -> bool:
        current = self.model_versions.get(meta.engine)
        if current is not None and meta.model_version != current:
            return True
        return meta.stale_until is not None and meta.stale_until <= self.now


class Sweeper:
    """Sweeps `cache` periodically; `start()` it in a running loop, `await stop()` at the end."""

    def __init__(
        self,
        cache: TieredCache,
        model_versions: Callable[[], Mapping[str, str]],
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.cache = cache
        self.model_versions = model_versions
        self.interval = interval
        self.clock = clock
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_gateway(cls, gateway: Gateway, interval: float) -> Sweeper:
        """A sweeper for the gateway's cache and engines."""
        return cls(
            gateway.cache,
            lambda: {name: engine.model_version for name, engine in gateway.engines.items()},
            interval,
            gateway.clock,
        )

    async def sweep(self) -> PurgeReport:
        """One pass over every tier."""
        scope = Unreachable(dict(self.model_versions()), self.clock())
        report = PurgeReport(filter={"unreachable": True})
        for tier in self.cache.tiers:
            report.tiers[tier.name] = await purge_tier(tier, scope)
        self.sweeps += 1
        if report.entries:
            log.info("sweep removed %d entries, %d bytes", report.entries, report.bytes)
        return report

    def start(self) -> Sweeper:
        """Start sweeping in the background (no-op when the interval is 0)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as exc:  # never let one bad sweep end sweeping
                log.warning("cache sweep failed: %s", exc)

    async def stop(self) -> None:
        """Stop sweeping (waits for the current batch to be cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
