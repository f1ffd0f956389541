"""The shared tier: entries in Redis (one node or a Redis Cluster), for many gateway replicas.

Layout, with `prefix` = `settings.redis_prefix`:

- `<prefix>:e:{<digest>}.<format>` → `Entry.to_bytes()` (header + audio, checksum verified on
  read). The `{<digest>}` hash tag puts every format of one line, and its fill lock
  (`cluster/fill_lock.py`), in one Cluster slot.
- `<prefix>:ix:voice:<voice>`, `<prefix>:ix:tag:<tag>` → sorted sets of entry ids scored by
  `stale_until` (+inf when pinned), so purging a voice or a tag reads one set instead of
  SCANning Redis. Members are cleaned lazily: every write drops members whose score has
  passed, `delete` removes its own, and `find` drops members whose entry Redis evicted under
  `maxmemory` (a stale member costs one EXISTS, never a wrong answer).

Each entry expires in Redis when its grace period ends (`meta.stale_until`); pinned entries
never expire. Redis's own eviction (`maxmemory` + `allkeys-lru`/`allkeys-lfu`) bounds memory.

Failure behaviour: every operation goes through the process's shared Redis handle
(`cluster/redis.py`: short timeouts, one circuit breaker for every Redis user). Errors surface
as `StorageError` (which `TieredCache` counts and treats as a miss); while the circuit is open
reads are plain misses and writes are dropped, so no request waits on a dead server.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from redis.asyncio.cluster import RedisCluster

from voicecache.circuit import CircuitBreaker
from voicecache.errors import CircuitOpen, StorageError
from voicecache.model import Entry, EntryMeta, Tier, TierStats, read_header

T = TypeVar("T")


# Bytes read to parse a header without the audio (text ≤ 4000 chars, JSON-escaped).
HEADER_PROBE = 64 * 1024
_SCAN_BATCH = 200


class RedisConnection(Protocol):
    """What the Redis tier (and the sweep lease) need of a Redis connection: the process's
    shared `cluster.redis.RedisHandle` satisfies it."""

    client: Any
    prefix: str
    breaker: CircuitBreaker
    errors: int
    skipped: int

    async def guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T: ...


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class RedisTier(Tier):
    """Entries in Redis under `prefix`, expiring at `stale_until`."""

    name = "redis"

    def __init__(self, redis: RedisConnection, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.prefix = redis.prefix
        self.client = redis.client
        self.breaker = redis.breaker
        self.clock = clock
        self.corrupt = 0  # entries that failed their checksum and were dropped

    # -- keys ----------------------------------------------------------------------------------

    def key(self, entry_id: str) -> str:
        """The Redis key of an entry: `<prefix>:e:{<digest>}.<format>`."""
        digest, dot, rest = entry_id.partition(".")
        return f"{self.prefix}:e:{{{digest}}}{dot}{rest}"

    def _entry_id(self, key: bytes | str) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        body = text[len(self.prefix) + 3 :]  # after "<prefix>:e:"
        return body.replace("{", "", 1).replace("}", "", 1)

    def index_key(self, kind: str, value: str) -> str:
        """The sorted set listing entries of one voice (`kind="voice"`) or tag (`"tag"`)."""
        return f"{self.prefix}:ix:{kind}:{value}"

    def _index_keys(self, meta: EntryMeta) -> list[str]:
        keys = [self.index_key("voice", meta.voice)] if meta.voice else []
        keys += [self.index_key("tag", tag) for tag in meta.tags]
        return keys

    # -- guarded calls --------------------------------------------------------------------------

    async def guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """One Redis operation through the shared handle's circuit breaker (see
        `cluster/redis.py`): `CircuitOpen` while it is open, `StorageError` on failure."""
        return await self.redis.guard(what, work)

    async def check(self) -> None:
        """Raise `StorageError` unless Redis answers a PING (readiness probes)."""
        await self.guard("check", self.client.ping)

    # -- Tier protocol ----------------------------------------------------------------------------

    async def get(self, entry_id: str) -> Entry | None:
        try:
            blob = await self.guard("get", lambda: self.client.get(self.key(entry_id)))
        except CircuitOpen:
            return None
        if not isinstance(blob, bytes):
            return None  # absent (the client never decodes responses, so never a str)
        try:
            return Entry.from_bytes(blob)
        except StorageError:
            self.corrupt += 1
            await self.delete(entry_id)
            return None

    async def set(self, entry_id: str, entry: Entry) -> None:
        meta = entry.meta
        now = self.clock()
        ttl_ms: int | None = None
        if meta.stale_until is not None:
            ttl_ms = math.ceil((meta.stale_until - now) * 1000)
            if ttl_ms <= 0:  # already past its grace period: nothing worth keeping
                await self.delete(entry_id)
                return
        blob = entry.to_bytes()
        score = math.inf if meta.stale_until is None else meta.stale_until

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key(entry_id), blob, px=ttl_ms)  # no PX: SET clears an old TTL
            for index in self._index_keys(meta):
                pipe.zadd(index, {entry_id: score})
                pipe.zremrangebyscore(index, "-inf", f"({now}")
            await pipe.execute()

        try:
            await self.guard("set", write)
        except CircuitOpen:
            return

    async def delete(self, entry_id: str) -> int:
        key = self.key(entry_id)

        async def remove() -> tuple[bytes | None, int]:
            pipe = self.client.pipeline(transaction=False)
            pipe.getrange(key, 0, HEADER_PROBE - 1)
            pipe.strlen(key)
            pipe.delete(key)
            head, size, _ = await pipe.execute()
            return head or None, int(size)

        try:
            head, size = await self.guard("delete", remove)
        except CircuitOpen:
            return 0
        if head:
            try:
                indexes = self._index_keys(read_header(head))
            except StorageError:
                indexes = []
            if indexes:
                await self._unindex(entry_id, indexes)
        return size

    async def _unindex(self, entry_id: str, indexes: Iterable[str]) -> None:
        async def work() -> None:
            pipe = self.client.pipeline(transaction=False)
            for index in indexes:
                pipe.zrem(index, entry_id)
            await pipe.execute()

        with contextlib.suppress(StorageError):  # a stale index member is tolerated by design
            await self.guard("unindex", work)

    async def find(self, *, voice: str | None = None, tag: str | None = None) -> list[str] | None:
        """Ids of entries with this voice and/or tag, from the index sets (no SCAN).

        Members whose entry is gone (evicted by Redis, or expired) are dropped from the index
        on the way, so the answer lists live entries only, bar races with concurrent writers."""
        indexes = []
        if voice is not None:
            indexes.append(self.index_key("voice", voice))
        if tag is not None:
            indexes.append(self.index_key("tag", tag))
        if not indexes:
            return None
        now = self.clock()

        async def read() -> list[set[str]]:
            pipe = self.client.pipeline(transaction=False)
            for index in indexes:
                pipe.zrangebyscore(index, now, "+inf")
            results = await pipe.execute()
            return [{m.decode() if isinstance(m, bytes) else m for m in r} for r in results]

        candidates = sorted(set.intersection(*await self.guard("find", read)))
        alive: list[str] = []
        for start in range(0, len(candidates), _SCAN_BATCH):
            batch = candidates[start : start + _SCAN_BATCH]

            async def exists(batch: list[str] = batch) -> list[int]:
                pipe = self.client.pipeline(transaction=False)
                for entry_id in batch:
                    pipe.exists(self.key(entry_id))
                return list(await pipe.execute())

            found = await self.guard("find", exists)
            alive += [entry_id for entry_id, hit in zip(batch, found, strict=True) if hit]
            gone = [entry_id for entry_id, hit in zip(batch, found, strict=True) if not hit]
            for entry_id in gone:
                await self._unindex(entry_id, indexes)
        return alive

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every entry under the prefix (SCAN on each master for a cluster)."""
        pattern = f"{_glob_escape(self.prefix)}:e:*"
        keys: list[bytes] = []

        async def collect() -> None:
            async for key in self.client.scan_iter(match=pattern, count=1000):
                keys.append(key)

        await self.guard("scan", collect)
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]

            async def heads(batch: list[bytes] = batch) -> list[bytes]:
                pipe = self.client.pipeline(transaction=False)
                for key in batch:
                    pipe.getrange(key, 0, HEADER_PROBE - 1)
                return list(await pipe.execute())

            for key, head in zip(batch, await self.guard("scan", heads), strict=True):
                if not head:
                    continue  # expired or evicted since SCAN listed it
                try:
                    meta = read_header(head)
                except StorageError:
                    continue
                yield self._entry_id(key), meta

    async def stats(self) -> TierStats:
        """Entries under the prefix (a SCAN: O(keys), keep it off hot paths) and server memory."""
        stats = TierStats(
            name=self.name,
            errors=self.redis.errors + self.corrupt,
            extra={"circuit": self.breaker.state, "skipped": self.redis.skipped},
        )
        pattern = f"{_glob_escape(self.prefix)}:e:*"

        async def count() -> int:
            return sum([1 async for _ in self.client.scan_iter(match=pattern, count=1000)])

        async def memory() -> list[dict[str, Any]]:
            if isinstance(self.client, RedisCluster):
                found = await self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                return list(found.values()) if _per_node(found) else [found]
            return [await self.client.info("memory")]

        try:
            stats.entries = await self.guard("stats", count)
            infos = await self.guard("stats", memory)
        except StorageError:
            return stats
        stats.bytes = sum(int(info.get("used_memory", 0)) for info in infos)
        capacity = sum(int(info.get("maxmemory", 0)) for info in infos)
        stats.capacity_bytes = capacity or None
        return stats

    async def aclose(self) -> None:
        """Nothing to close: the client belongs to the shared handle, closed once by its
        owner (`bootstrap.Services.aclose`)."""


def _per_node(found: Any) -> bool:
    """Whether a cluster reply is a dict of per-node replies (rather than one merged reply)."""
    return (
        isinstance(found, dict) and bool(found) and all(isinstance(v, dict) for v in found.values())
    )
