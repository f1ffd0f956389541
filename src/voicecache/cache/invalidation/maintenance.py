"""A server process's background work: the sweeper and the purge follower.

The app's lifespan starts one `Maintenance` next to the gateway and stops it before closing
the gateway. Purges asked of this process go through `Maintenance.purge`, which also tells
every other process (see `feed.py`).
"""

from __future__ import annotations

from voicecache.cache.invalidation.feed import PurgeFollower, attach
from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import PurgeReport, purge
from voicecache.cache.invalidation.sweeper import Sweeper
from voicecache.cache.service import Gateway
from voicecache.cluster.purge_feed import build_feed
from voicecache.settings import Settings


class Maintenance:
    """The sweeper and the purge follower of one process."""

    def __init__(self, gateway: Gateway, settings: Settings) -> None:
        self.gateway = gateway
        self.feed = attach(gateway.cache, build_feed(settings.data_dir, gateway.cache.tiers))
        self.sweeper = Sweeper.for_gateway(gateway, settings.sweep_interval, settings.data_dir)
        self.follower = PurgeFollower(gateway.cache, self.feed, settings.purge_poll_interval)

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
