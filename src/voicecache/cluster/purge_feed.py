"""Purge notices in a Redis stream, so a purge reaches every replica sharing that Redis.

The stream is `<prefix>:purges`, capped at about 1,000 notices (`XADD MAXLEN ~`). A follower
starts reading at the newest notice when it first polls: purges published before the process
started were applied before it existed. Redis trouble is the Redis tier's: the feed goes
through its client and circuit breaker (`RedisTier.guard`), and `MultiFeed` logs a failing feed
and carries on with the others (see `cache/invalidation/feed.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicecache.cache.invalidation.feed import (
    FileFeed,
    MultiFeed,
    PurgeFeed,
    PurgeNotice,
    parse_notices,
)
from voicecache.cluster.redis import RedisHandle

_STREAM_LENGTH = 1000


class RedisFeed(PurgeFeed):
    """Notices in a capped Redis stream shared by every replica using that Redis."""

    def __init__(self, redis: RedisHandle) -> None:
        self.redis = redis
        self.key = redis.key("purges")
        self._last: str | None = None

    async def publish(self, notice: PurgeNotice) -> None:
        async def add() -> Any:
            return await self.redis.client.xadd(
                self.key, {"notice": notice.to_json()}, maxlen=_STREAM_LENGTH, approximate=True
            )

        await self.redis.guard("purge-feed", add)

    async def poll(self) -> list[PurgeNotice]:
        client = self.redis.client
        if self._last is None:

            async def newest() -> Any:
                return await client.xrevrange(self.key, count=1)

            latest = await self.redis.guard("purge-feed", newest)
            self._last = _decode(latest[0][0]) if latest else "0-0"
            return []

        last = self._last

        async def read() -> Any:
            return await client.xread({self.key: last}, count=100)

        found = await self.redis.guard("purge-feed", read)
        lines: list[bytes | str] = []
        for _, messages in found or ():
            for message_id, fields in messages:
                self._last = _decode(message_id)
                value = fields.get(b"notice", fields.get("notice"))
                if value is not None:
                    lines.append(value)
        return parse_notices(lines)


def build_feed(data_dir: Path, redis: RedisHandle | None) -> MultiFeed:
    """The feeds for a process: the host's file, plus a Redis stream when Redis is shared."""
    feeds: list[PurgeFeed] = [FileFeed(Path(data_dir) / "purges.jsonl")]
    if redis is not None:
        feeds.append(RedisFeed(redis))
    return MultiFeed(feeds)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
