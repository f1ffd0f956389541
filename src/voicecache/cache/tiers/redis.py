"""The shared tier: entries in Redis (one node or a Redis Cluster), for many gateway replicas.

Layout, with `prefix` = `settings.redis_prefix`:

- `<prefix>:e:{<digest>}.<format>` → `Entry.to_bytes()` (header + audio, checksum verified on
  read). The `{<digest>}` hash tag puts every format of one line, and its fill lock
  (`cluster/fill_lock.py`), in one Cluster slot.
- `<prefix>:ix:…` → the index (`tiers/index.py`): a summary of every entry, a sorted set of
  ids by `stale_until`, sets per voice, tag and model version, and counters of entries and
  bytes. It is written in the same pipeline as the entry, so one round trip stores both.
  Sweeps, purges and `stats()` read it and never SCAN; `find` answers voice and tag lookups
  from it.

Each entry expires in Redis when its grace period ends (`meta.stale_until`); pinned entries
never expire. Redis's own eviction (`maxmemory` + `volatile-lru`/`volatile-lfu`, which never
evicts the index or pinned entries since they carry no TTL) bounds memory. Entries Redis
expires or evicts on its own leave index members behind: the sweeper removes expired ones by
range, and checks `audit_batch` members per pass for evicted ones (an EXISTS each).

Entries stored before the index existed are adopted once (`adopt`: one SCAN, by the sweeper
that holds the lease); until then, purges other than by voice or tag scan as they used to.

Failure behaviour: every operation goes through the process's shared Redis handle
(`cluster/redis.py`: short timeouts, one circuit breaker for every Redis user). Errors surface
as `StorageError` (which `TieredCache` counts and treats as a miss); while the circuit is open
reads are plain misses and writes are dropped, so no request waits on a dead server.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster

from voicecache.cache.tiers.index import BATCH, RedisConnection, StoreIndex, Summary
from voicecache.cache.tiers.scopes import UnreachableScope
from voicecache.errors import CircuitOpen, StorageError
from voicecache.model import Entry, EntryMeta, Tier, TierStats, read_header

__all__ = ["HEADER_PROBE", "RedisConnection", "RedisTier"]

T = TypeVar("T")
log = logging.getLogger(__name__)

# Bytes read to parse a header without the audio (text ≤ 4000 chars, JSON-escaped).
HEADER_PROBE = 64 * 1024
_SCAN_BATCH = 200


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class RedisTier(Tier):
    """Entries in Redis under `prefix`, expiring at `stale_until`, indexed in Redis."""

    name = "redis"

    def __init__(
        self,
        redis: RedisConnection,
        *,
        clock: Callable[[], float] = time.time,
        audit_batch: int = 1000,
    ) -> None:
        self.redis = redis
        self.prefix = redis.prefix
        self.url = redis.url  # with the prefix, names the store (one sweep lease per store)
        self.client = redis.client
        self.breaker = redis.breaker
        self.clock = clock
        # Through `self.clock`, so a clock replaced later (tests) reaches the index too.
        self.index = StoreIndex(redis, f"{redis.prefix}:ix", clock=lambda: self.clock())
        self.audit_batch = audit_batch  # index members checked per sweep for evicted entries
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
        return self.index.voice_key(value) if kind == "voice" else self.index.tag_key(value)

    async def check(self) -> None:
        """Raise `StorageError` unless Redis answers a PING (readiness probes)."""
        await self.redis.guard("check", self.client.ping)

    # -- Tier protocol ----------------------------------------------------------------------------

    async def get(self, entry_id: str) -> Entry | None:
        return await self._get(entry_id, verify=True)

    async def read(self, entry_id: str) -> Entry | None:
        """One GET (one round trip), header and length checked, checksum not."""
        return await self._get(entry_id, verify=False)

    async def _get(self, entry_id: str, *, verify: bool) -> Entry | None:
        try:
            blob = await self.redis.guard("get", lambda: self.client.get(self.key(entry_id)))
        except CircuitOpen:
            return None
        if not isinstance(blob, bytes):
            return None  # absent (the client never decodes responses, so never a str)
        try:
            return Entry.from_bytes(blob, verify=verify)
        except StorageError:
            self.corrupt += 1
            await self.delete(entry_id)
            return None

    async def set(self, entry_id: str, entry: Entry) -> None:
        meta = entry.meta
        ttl_ms: int | None = None
        if meta.stale_until is not None:
            ttl_ms = math.ceil((meta.stale_until - self.clock()) * 1000)
            if ttl_ms <= 0:  # already past its grace period: nothing worth keeping
                await self.delete(entry_id)
                return
        blob = entry.to_bytes()

        async def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.key(entry_id), blob, px=ttl_ms)  # no PX: SET clears an old TTL
            self.index.queue_add(pipe, entry_id, meta, len(blob))
            await pipe.execute()

        try:
            await self.redis.guard("set", write)
        except CircuitOpen:
            return

    async def delete(self, entry_id: str) -> int:
        freed = await self._delete([(entry_id, None)])
        return freed[0]

    async def _delete(self, items: list[tuple[str, Summary | None]]) -> list[int]:
        """Delete entries and their index records in one round trip (plus one to drop the
        per-voice/tag/generation members of entries whose summary was not known); returns
        the bytes freed per entry."""

        async def remove() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for entry_id, summary in items:
                key = self.key(entry_id)
                pipe.strlen(key)
                pipe.delete(key)
                self.index.queue_remove(pipe, entry_id, summary)
            return list(await pipe.execute())

        try:
            replies = await self.redis.guard("delete", remove)
        except CircuitOpen:
            return [0] * len(items)
        freed: list[int] = []
        learned: dict[str, Summary] = {}
        position = 0
        for entry_id, summary in items:
            size, deleted, raw = replies[position : position + 3]
            position += 3 + (0 if summary is None else len(self.index.member_keys(summary)))
            freed.append(int(size) if deleted else 0)
            if summary is None and (found := Summary.loads(raw)) is not None:
                learned[entry_id] = found
        with contextlib.suppress(StorageError):  # a stale member is tolerated by design
            await self.index.drop_members(learned)
        return freed

    async def find(self, *, voice: str | None = None, tag: str | None = None) -> list[str] | None:
        """Ids of entries with this voice and/or tag, from the index sets (no SCAN).

        Members whose entry is gone (evicted by Redis, or expired) are dropped from the index
        on the way, so the answer lists live entries only, bar races with concurrent writers."""
        if voice is None and tag is None:
            return None
        candidates = await self.index.find(voice=voice, tag=tag)
        queried = [self.index_key("voice", voice)] if voice is not None else []
        queried += [self.index_key("tag", tag)] if tag is not None else []
        alive: list[str] = []
        for start in range(0, len(candidates), _SCAN_BATCH):
            batch = candidates[start : start + _SCAN_BATCH]
            found = await self._exists(batch)
            alive += [entry_id for entry_id, hit in zip(batch, found, strict=True) if hit]
            gone = [entry_id for entry_id, hit in zip(batch, found, strict=True) if not hit]
            if gone:
                await self._forget(gone, queried)
        return alive

    async def _exists(self, entry_ids: list[str]) -> list[bool]:
        async def check() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for entry_id in entry_ids:
                pipe.exists(self.key(entry_id))
            return list(await pipe.execute())

        return [bool(hit) for hit in await self.redis.guard("exists", check)]

    async def _forget(self, entry_ids: list[str], keys: list[str]) -> None:
        """Drop index records of entries Redis removed on its own."""
        with contextlib.suppress(StorageError):  # a stale member is tolerated by design
            await self.index.remove(entry_ids, listed_in=keys)

    # -- sweeps and purges: the index, never a SCAN -----------------------------------------------

    async def delete_matching(self, scope: object) -> tuple[int, int] | None:
        """Delete what a purge or sweep scope covers, found through the index; returns
        (entries, bytes), or None for a purge by key (the caller deletes its few ids)."""
        if not self.index.answers(scope):
            return None
        if not await self.index.complete():
            await self.adopt()  # one SCAN, once: no dearer than the scan it replaces
        entries = freed = 0
        async for batch in self.index.matching(scope, self._resolve):
            for size in await self._delete(list[tuple[str, Summary | None]](batch)):
                if size > 0:
                    entries += 1
                    freed += size
        if isinstance(scope, UnreachableScope):
            await self.audit()
        return entries, freed

    async def _resolve(self, entry_ids: list[str]) -> dict[str, Summary]:
        """Summaries of entries the index does not know, from their headers; they are indexed
        on the way (entries written by a replica that predates the index)."""
        found = await self._headers([self.key(entry_id) for entry_id in entry_ids])
        summaries = {
            entry_id: Summary.of(meta, size)
            for entry_id, (meta, size) in zip(entry_ids, found, strict=True)
            if meta is not None
        }

        async def index() -> None:
            pipe = self.client.pipeline(transaction=False)
            for entry_id, (meta, size) in zip(entry_ids, found, strict=True):
                if meta is not None:
                    self.index.queue_add(pipe, entry_id, meta, size)
            await pipe.execute()

        if summaries:
            await self.redis.guard("adopt", index)
        return summaries

    async def _headers(self, keys: list[Any]) -> list[tuple[EntryMeta | None, int]]:
        """(header or None, stored size) of each key, one round trip."""

        async def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.getrange(key, 0, HEADER_PROBE - 1)
                pipe.strlen(key)
            return list(await pipe.execute())

        replies = await self.redis.guard("headers", read)
        found: list[tuple[EntryMeta | None, int]] = []
        for head, size in zip(replies[::2], replies[1::2], strict=True):
            try:
                found.append((read_header(head) if head else None, int(size)))
            except StorageError:
                found.append((None, int(size)))
        return found

    async def adopt(self) -> int:
        """Index every entry stored before the index existed (one SCAN of the prefix, run
        once per Redis by the sweeper); returns how many it indexed."""
        pattern = f"{_glob_escape(self.prefix)}:e:*"
        adopted = 0
        keys: list[bytes] = []

        async def collect() -> None:
            async for key in self.client.scan_iter(match=pattern, count=1000):
                keys.append(key)

        await self.redis.guard("adopt", collect)
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]
            found = await self._headers(batch)

            async def index(batch: list[bytes] = batch, found: list[Any] = found) -> None:
                pipe = self.client.pipeline(transaction=False)
                for key, (meta, size) in zip(batch, found, strict=True):
                    if meta is not None:
                        self.index.queue_add(pipe, self._entry_id(key), meta, size)
                await pipe.execute()

            await self.redis.guard("adopt", index)
            adopted += sum(meta is not None for meta, _ in found)
        await self.index.mark_complete()
        if adopted:
            log.info("redis index: adopted %d entries stored before it existed", adopted)
        return adopted

    async def audit(self) -> int:
        """Check `audit_batch` index members (by rank, resuming where the last audit stopped,
        wrapping around at the end) and drop those whose entry Redis evicted; returns how many
        it dropped."""
        if self.audit_batch <= 0:
            return 0
        client, key = self.client, self.index.expiry_key
        start = int(await self.index.cursor("audit") or 0)

        async def page() -> list[str]:
            found = await client.zrange(key, start, start + self.audit_batch - 1)
            return [_text(member) for member in found]

        members = await self.redis.guard("audit", page)
        gone: list[str] = []
        for at in range(0, len(members), BATCH):
            batch = members[at : at + BATCH]
            found = await self._exists(batch)
            gone += [entry_id for entry_id, hit in zip(batch, found, strict=True) if not hit]
        if gone:
            await self.index.remove(gone)
        # Members after the dropped ones moved up by as many ranks.
        after = start + len(members) - len(gone)
        await self.index.set_cursor(
            "audit", str(after) if len(members) == self.audit_batch else None
        )
        return len(gone)

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every entry under the prefix with its full header (SCAN on each master): for
        inspection and tools, never for sweeps, purges or stats."""
        pattern = f"{_glob_escape(self.prefix)}:e:*"
        keys: list[bytes] = []

        async def collect() -> None:
            async for key in self.client.scan_iter(match=pattern, count=1000):
                keys.append(key)

        await self.redis.guard("scan", collect)
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start : start + _SCAN_BATCH]

            async def heads(batch: list[bytes] = batch) -> list[bytes]:
                pipe = self.client.pipeline(transaction=False)
                for key in batch:
                    pipe.getrange(key, 0, HEADER_PROBE - 1)
                return list(await pipe.execute())

            for key, head in zip(batch, await self.redis.guard("scan", heads), strict=True):
                if not head:
                    continue  # expired or evicted since SCAN listed it
                try:
                    meta = read_header(head)
                except StorageError:
                    continue
                yield self._entry_id(key), meta

    async def stats(self) -> TierStats:
        """Entries and bytes from the index counters (two commands, whatever the number of
        entries) and the servers' memory (`INFO memory`, one per master)."""
        stats = TierStats(
            name=self.name,
            errors=self.redis.errors + self.corrupt,
            extra={"circuit": self.breaker.state, "skipped": self.redis.skipped},
        )

        async def memory() -> list[dict[str, Any]]:
            if isinstance(self.client, RedisCluster):
                found = await self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
                return list(found.values()) if _per_node(found) else [found]
            return [await self.client.info("memory")]

        try:
            stats.entries, stats.bytes = await self.index.counters()
            stats.extra["indexed"] = await self.index.complete()
            infos = await self.redis.guard("stats", memory)
        except StorageError:
            return stats
        stats.extra["used_memory"] = sum(int(info.get("used_memory", 0)) for info in infos)
        capacity = sum(int(info.get("maxmemory", 0)) for info in infos)
        stats.capacity_bytes = capacity or None
        return stats

    async def aclose(self) -> None:
        """Nothing to close: the client belongs to the shared handle, closed once by its
        owner (`bootstrap.Services.aclose`)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _per_node(found: Any) -> bool:
    """Whether a cluster reply is a dict of per-node replies (rather than one merged reply)."""
    return (
        isinstance(found, dict) and bool(found) and all(isinstance(v, dict) for v in found.values())
    )
