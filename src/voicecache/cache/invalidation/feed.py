"""Purges announced to every other voicecache process, so none keeps serving purged audio.

A purge runs in one process (a worker answering `DELETE /admin/cache`, or `voicecache purge`),
which removes the entries from every tier it has. Shared tiers (Redis, S3, a disk directory
on the same host) are then clean for everybody, but the other processes' memory tiers (and,
on other hosts, their disk tiers) still hold copies. So the purging process publishes a
`PurgeNotice` (the filter and the identities of the tiers it already purged; `attach` makes
every `invalidation.purge.purge` of a cache do so, voice erasure included), and a
`PurgeFollower` in every server process polls for notices and applies each one, fenced like
any purge, to those of its own tiers that nobody purged yet.

Two feeds carry notices, both polled every `purge_poll_interval` seconds:

- a file in the data directory (`purges.jsonl`, one JSON line per purge, appended with
  `O_APPEND`): every worker on the host and the CLI share it; a poll is one `stat`;
- a Redis stream (`<prefix>:purges`, capped at 1,000 notices) when a Redis tier is
  configured: every replica sharing that Redis, on any host (`cluster/purge_feed.py`).

So a purge reaches every process within about one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import PurgeReport, purge, tier_identity
from voicecache.cache.tiers.tiered import PurgeScope, TieredCache
from voicecache.model import Tier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeNotice:
    """One purge, as announced to other processes."""

    origin: str
    filter: dict[str, Any]
    purged: tuple[str, ...]  # identities of the tiers the origin purged itself

    def to_json(self) -> str:
        return json.dumps(
            {"origin": self.origin, "filter": self.filter, "purged": list(self.purged)},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PurgeNotice:
        data = json.loads(text)
        return cls(str(data["origin"]), dict(data["filter"]), tuple(data["purged"]))

    def purge_filter(self) -> PurgeFilter:
        return PurgeFilter(**self.filter)


class PurgeFeed(ABC):
    """Where purge notices are published and read back."""

    @abstractmethod
    async def publish(self, notice: PurgeNotice) -> None:
        """Announce a purge to the other processes."""

    @abstractmethod
    async def poll(self) -> list[PurgeNotice]:
        """Notices published since the last poll (the process's own included)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the feed holds."""


class FileFeed(PurgeFeed):
    """Notices as JSON lines appended to a file shared by the processes of one host."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Notices written before this process started were applied before it existed.
        self._offset = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    async def publish(self, notice: PurgeNotice) -> None:
        await asyncio.to_thread(self._append, (notice.to_json() + "\n").encode())

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write() with O_APPEND: concurrent writers never interleave a line.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    async def poll(self) -> list[PurgeNotice]:
        size = self._size()
        if size == self._offset:
            return []  # the common case: one stat, nothing to read
        if size < self._offset:
            self._offset = 0  # the file was truncated or replaced
        chunk = await asyncio.to_thread(self._read_from, self._offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self._offset += len(complete)
        return parse_notices(complete.splitlines())

    def _read_from(self, offset: int) -> bytes:
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()


class MultiFeed(PurgeFeed):
    """Publishes to, and polls, several feeds; the origin id identifies this process."""

    def __init__(self, feeds: Sequence[PurgeFeed]) -> None:
        self.feeds = list(feeds)
        self.origin = uuid.uuid4().hex

    def notice(self, flt: PurgeFilter, purged: Sequence[str]) -> PurgeNotice:
        return PurgeNotice(self.origin, asdict(flt), tuple(purged))

    async def publish(self, notice: PurgeNotice) -> None:
        for feed in self.feeds:
            try:
                await feed.publish(notice)
            except Exception as exc:  # one broken feed must not hide the purge from others
                log.warning("could not announce a purge on %s: %s", type(feed).__name__, exc)

    async def poll(self) -> list[PurgeNotice]:
        notices: list[PurgeNotice] = []
        for feed in self.feeds:
            try:
                notices.extend(await feed.poll())
            except Exception as exc:
                log.debug("purge feed %s unavailable: %s", type(feed).__name__, exc)
        return [notice for notice in notices if notice.origin != self.origin]


def attach(cache: TieredCache, feed: MultiFeed) -> MultiFeed:
    """Make every purge of `cache` (`invalidation.purge`) announce itself on `feed`."""

    async def announce(scope: PurgeScope, tiers: Sequence[Tier]) -> None:
        if isinstance(scope, PurgeFilter):  # other scopes (the sweeper's) stay local
            await feed.publish(feed.notice(scope, [tier_identity(tier) for tier in tiers]))

    cache.announcer = announce
    return feed


class PurgeFollower:
    """Applies other processes' purges to this process's tiers, polling the feed."""

    def __init__(self, cache: TieredCache, feed: MultiFeed, interval: float) -> None:
        self.cache = cache
        self.feed = feed
        self.interval = interval
        self.applied = 0
        self._task: asyncio.Task[None] | None = None

    async def follow_once(self) -> int:
        """Apply every notice published since the last call; returns how many."""
        notices = await self.feed.poll()
        for notice in notices:
            await self.apply(notice)
        return len(notices)

    async def apply(self, notice: PurgeNotice) -> PurgeReport:
        already = set(notice.purged)
        tiers = [tier for tier in self.cache.tiers if tier_identity(tier) not in already]
        report = await purge(self.cache, notice.purge_filter(), tiers=tiers, announce=False)
        self.applied += 1
        return report

    def start(self) -> PurgeFollower:
        """Follow in the background (no-op when the interval is 0)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            # Poll at once on start: it sets where the Redis stream is read from.
            try:
                await self.follow_once()
            except Exception as exc:  # keep following whatever one notice does
                log.warning("applying a purge notice failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.feed.aclose()


def parse_notices(lines: Sequence[bytes | str]) -> list[PurgeNotice]:
    notices = []
    for line in lines:
        if not line.strip():
            continue
        try:
            notices.append(PurgeNotice.from_json(line))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed purge notice: %s", exc)
    return notices
