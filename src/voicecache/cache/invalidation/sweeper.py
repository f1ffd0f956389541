"""The background sweeper: removes unreachable generations of audio from every tier.

An entry is unreachable when no request can ever hit it again: its engine's model version has
changed (`VOICECACHE_<ENGINE>_MODEL_VERSION` is part of the key, so a bump makes every old key
unreachable), or it is past its grace period (`stale_until`), when it can no longer even be
served stale. Entries of engines that are no longer configured are left alone: configuring
the engine again would make them reachable.

The sweep runs every `sweep_interval` seconds in the app's event loop, tier by tier. Tiers with
an index (disk, Redis, S3 with Redis) answer it from the index and touch only what they delete;
the memory tier is scanned in small batches that yield to the loop (see
`invalidation.purge_tier`), so requests are never blocked behind it; a failure is logged and
the next sweep tries again.

Every process sweeps its own memory tier, but a store that several processes share (a disk
directory, Redis, an S3 bucket) is swept by one of them per interval: a `SweepLease` per
store, held in Redis when a Redis tier is configured (every replica sees it), else as a file
in the data directory (every worker of the host sees it). Without Redis, sweeping S3 costs a
ranged GET per object (paced and resumable, see `tiers/s3.py`), so this matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicecache.cache.invalidation.filter import Unreachable
from voicecache.cache.invalidation.purge import PurgeReport, purge_tier, tier_identity
from voicecache.cache.service import Gateway
from voicecache.cache.tiers.memory import MemoryTier
from voicecache.cache.tiers.tiered import TieredCache
from voicecache.model import Tier

if TYPE_CHECKING:  # the Redis client is imported only where Redis is configured
    from voicecache.cache.tiers.redis import RedisConnection

log = logging.getLogger(__name__)


class SweepLease:
    """Grants the sweep of one shared store to one process per interval."""

    def __init__(self, data_dir: Path | None, redis: RedisConnection | None = None) -> None:
        self.data_dir = data_dir
        self.redis = redis
        self.holder = uuid.uuid4().hex

    async def acquire(self, tier: Tier, interval: float) -> bool:
        """Whether this process sweeps `tier` now (always for a memory tier)."""
        if isinstance(tier, MemoryTier) or interval <= 0:
            return True
        name = hashlib.sha256(tier_identity(tier).encode()).hexdigest()[:24]
        # A little shorter than the interval, so the next sweep finds the lease free.
        hold = interval * 0.9
        if self.redis is not None:
            client = self.redis.client
            key = f"{self.redis.prefix}:sweep:{name}"

            async def take() -> Any:
                return await client.set(key, self.holder, nx=True, px=max(1, int(hold * 1000)))

            try:
                return bool(await self.redis.guard("sweep-lease", take))
            except Exception:
                pass  # Redis unreachable: fall back to the host's file lease
        if self.data_dir is None:
            return True
        return await asyncio.to_thread(
            self._file_lease, self.data_dir / f"sweep-{name}.lease", hold
        )

    def _file_lease(self, path: Path, hold: float) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            return True
        except FileExistsError:
            pass
        try:
            if now - path.stat().st_mtime < hold:
                return False  # another worker swept this store recently
            os.utime(path, (now, now))
        except OSError:
            return False
        return True


class Sweeper:
    """Sweeps `cache` periodically; `start()` it in a running loop, `await stop()` at the end."""

    def __init__(
        self,
        cache: TieredCache,
        model_versions: Callable[[], Mapping[str, str]],
        interval: float,
        clock: Callable[[], float],
        lease: SweepLease | None = None,
    ) -> None:
        self.cache = cache
        self.lease = lease
        self.model_versions = model_versions
        self.interval = interval
        self.clock = clock
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_gateway(
        cls,
        gateway: Gateway,
        interval: float,
        data_dir: Path | None = None,
        redis: RedisConnection | None = None,
    ) -> Sweeper:
        """A sweeper for the gateway's cache and engines; shared stores are swept by one
        process per interval, through a lease in Redis (when shared) or a file on the host."""
        return cls(
            gateway.cache,
            lambda: {name: engine.model_version for name, engine in gateway.engines.items()},
            interval,
            gateway.clock,
            SweepLease(data_dir, redis),
        )

    async def sweep(self) -> PurgeReport:
        """One pass over every tier."""
        scope = Unreachable(dict(self.model_versions()), self.clock())
        report = PurgeReport(filter={"unreachable": True})
        for tier in self.cache.tiers:
            if self.lease is not None and not await self.lease.acquire(tier, self.interval):
                continue  # another process sweeps this shared store this time
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
