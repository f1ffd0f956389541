"""A server process's background work: the sweeper and the purge follower.

`bootstrap.build` makes one per process (the purge feed already attached to the cache); a
server's lifespan starts it and stops it before closing the gateway. Purges asked of this
process go through `Maintenance.purge`, which also tells every other process (see `feed.py`).
"""

from __future__ import annotations

from voicecache.cache.invalidation.feed import PurgeFollower
from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import PurgeReport, purge
from voicecache.cache.invalidation.sweeper import Sweeper
from voicecache.cache.service import Gateway


class Maintenance:
    """The sweeper and the purge follower of one process."""

    def __init__(self, gateway: Gateway, sweeper: Sweeper, follower: PurgeFollower) -> None:
        self.gateway = gateway
        self.sweeper = sweeper
        self.follower = follower

    def start(self) -> Maintenance:
        """Start both loops in the running event loop."""
        self.sweeper.start()
        self.follower.start()
        return self

    async def purge(self, flt: PurgeFilter) -> PurgeReport:
        """Purge every tier here, then have every other process purge its copies."""
        return await purge(self.gateway.cache, flt)

    async def stop(self) -> None:
        await self.sweeper.stop()
        await self.follower.stop()
