"""The index of a shared store, kept in Redis: what sweeps, purges and stats read instead of
the entries themselves.

The Redis tier keeps its own entries' index here, and the S3 tier keeps its bucket's (when
Redis is configured). Keys, for a namespace `ns` (`<prefix>:ix` for the Redis tier,
`<prefix>:s3ix:<bucket>/<prefix>` for S3):

- `ns:{ns}:meta`    hash  id → summary: size, created, expiry, grace end, engine, model
                          version, voice, tags (JSON, ~150 bytes). Every scope a purge or the
                          sweeper can ask is decided on it, so matches are found without
                          reading an entry.
- `ns:{ns}:expiry`  zset  id → `stale_until` (+inf when pinned, so no expiry range reaches a
                          pinned entry and ZCARD still counts it).
- `ns:{ns}:stats`   hash  `bytes` (sum of sizes), `grace` (the longest grace seen, to turn
                          "expired" into an expiry range), `complete` (every entry is indexed).
- `ns:{ns}:gens`    set   the (engine, model version) pairs that have entries.
- `ns:gen:<engine>:<version>`, `ns:voice:<voice>`, `ns:tag:<tag>`  zsets of ids → `stale_until`.

The four `{ns}` keys share one Cluster slot, so the scripts that keep them consistent (size
counter, overwrite, removal) run atomically; the per-voice, per-tag and per-generation sets
spread over the cluster and are updated in the same pipeline. Counts are exact for what went
through the index; members of entries Redis expired or evicted on its own are dropped when the
sweeper reaches them (expiry range, `RedisTier` audit) or when a purge or `find` meets them.

Why counters rather than a cached SCAN for `stats()`: a count kept with each write costs one
script call in a pipeline that already runs, and a scrape reads two numbers, whatever the
number of entries; a SCAN costs O(keys) per refresh and per process, however rarely it runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from voicecache.cache.tiers.scopes import FilterScope, UnreachableScope
from voicecache.circuit import CircuitBreaker
from voicecache.model import EntryMeta

T = TypeVar("T")

BATCH = 200  # ids per Redis round trip


class RedisConnection(Protocol):
    """What the Redis tier, the indexes and the sweep lease need of a Redis connection: the
    process's shared `cluster.redis.RedisHandle` satisfies it."""

    client: Any
    prefix: str
    url: str
    breaker: CircuitBreaker
    errors: int
    skipped: int

    async def guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T: ...


# KEYS: meta, expiry, stats, gens. ARGV: id, summary, size, expiry score, grace, generation.
# An overwrite replaces the summary and corrects the byte count by the size difference.
_ADD = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local delta = tonumber(ARGV[3])
if old then delta = delta - tonumber(string.match(old, '^%[(%d+)')) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if delta ~= 0 then redis.call('HINCRBY', KEYS[3], 'bytes', delta) end
if tonumber(ARGV[5]) > tonumber(redis.call('HGET', KEYS[3], 'grace') or '0') then
  redis.call('HSET', KEYS[3], 'grace', ARGV[5])
end
redis.call('SADD', KEYS[4], ARGV[6])
return delta
"""

# KEYS: meta, expiry, stats. ARGV: id. Returns the removed summary (nil when not indexed).
_REMOVE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'bytes', -tonumber(string.match(old, '^%[(%d+)')))
return old
"""


@dataclass(frozen=True, slots=True)
class Summary:
    """What the index knows of one entry: enough to decide any purge or sweep scope."""

    size: int
    created: float
    expires_at: float | None
    stale_until: float | None
    engine: str
    model_version: str
    voice: str
    tags: tuple[str, ...]

    @classmethod
    def of(cls, meta: EntryMeta, size: int) -> Summary:
        return cls(
            size,
            meta.created,
            meta.expires_at,
            meta.stale_until,
            meta.engine,
            meta.model_version,
            meta.voice,
            meta.tags,
        )

    def dumps(self) -> str:
        # The size comes first: the scripts read it with a pattern, without a JSON decoder.
        fields: list[Any] = [self.size, self.created, self.expires_at, self.stale_until]
        fields += [self.engine, self.model_version, self.voice, list(self.tags)]
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: bytes | str | None) -> Summary | None:
        if raw is None:
            return None
        try:
            size, created, expires, stale, engine, version, voice, tags = json.loads(raw)
            return cls(int(size), created, expires, stale, engine, version, voice, tuple(tags))
        except (ValueError, TypeError):
            return None  # written by something else: treated as not indexed

    def meta(self, entry_id: str) -> EntryMeta:
        """A header with the indexed fields (the rest empty), for `scope.matches`."""
        key, _, fmt = entry_id.partition(".")
        return EntryMeta(
            key=key,
            format=fmt,  # type: ignore[arg-type]
            sample_rate=0,
            duration=0.0,
            size=self.size,
            checksum="",
            created=self.created,
            expires_at=self.expires_at,
            stale_until=self.stale_until,
            engine=self.engine,
            model_version=self.model_version,
            voice=self.voice,
            tags=self.tags,
        )

    @property
    def generation(self) -> tuple[str, str]:
        return self.engine, self.model_version


Match = tuple[str, Summary]
# Reads the headers of entries the index has no summary for: id → summary of those that exist.
Resolver = Callable[[list[str]], Awaitable[dict[str, Summary]]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _score(meta: EntryMeta) -> float:
    return math.inf if meta.stale_until is None else meta.stale_until


class StoreIndex:
    """The Redis index of one store (see the module docstring for the keys)."""

    def __init__(
        self,
        redis: RedisConnection,
        namespace: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.clock = clock
        core = f"{namespace}:{{{namespace}}}"
        self.meta_key = f"{core}:meta"
        self.expiry_key = f"{core}:expiry"
        self.stats_key = f"{core}:stats"
        self.gens_key = f"{core}:gens"
        self._complete = False  # once true, stays true for this process

    # -- keys -----------------------------------------------------------------------------------

    def voice_key(self, voice: str) -> str:
        return f"{self.namespace}:voice:{voice}"

    def tag_key(self, tag: str) -> str:
        return f"{self.namespace}:tag:{tag}"

    def gen_key(self, engine: str, version: str) -> str:
        return f"{self.namespace}:gen:{quote(engine, safe='')}:{quote(version, safe='')}"

    def member_keys(self, summary: Summary) -> list[str]:
        """The per-voice, per-tag and per-generation sets listing an entry."""
        keys = [self.gen_key(*summary.generation)]
        if summary.voice:
            keys.append(self.voice_key(summary.voice))
        keys += [self.tag_key(tag) for tag in summary.tags]
        return keys

    def is_index_key(self, key: str) -> bool:
        return key.startswith(f"{self.namespace}:")

    async def _guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        return await self.redis.guard(f"index {what}", work)

    # -- writes ---------------------------------------------------------------------------------

    def queue_add(self, pipe: Any, entry_id: str, meta: EntryMeta, size: int) -> None:
        """Queue the index updates for a stored entry on `pipe` (the caller's pipeline, so the
        Redis tier writes an entry and its index in one round trip)."""
        summary = Summary.of(meta, size)
        score = _score(meta)
        grace = 0.0
        if meta.stale_until is not None and meta.expires_at is not None:
            grace = max(0.0, meta.stale_until - meta.expires_at)
        generation = json.dumps(list(summary.generation))
        keys = (self.meta_key, self.expiry_key, self.stats_key, self.gens_key)
        args = (entry_id, summary.dumps(), size, "+inf" if math.isinf(score) else score, grace)
        pipe.eval(_ADD, len(keys), *keys, *args, generation)
        now = self.clock()
        for key in self.member_keys(summary):
            pipe.zadd(key, {entry_id: score})
            pipe.zremrangebyscore(key, "-inf", f"({now}")  # members past their grace

    def queue_remove(self, pipe: Any, entry_id: str, summary: Summary | None) -> None:
        """Queue the removal of an entry whose summary the caller has (or None: core keys
        only; `remove` reads it first)."""
        pipe.eval(_REMOVE, 3, self.meta_key, self.expiry_key, self.stats_key, entry_id)
        if summary is not None:
            for key in self.member_keys(summary):
                pipe.zrem(key, entry_id)

    async def add(self, entry_id: str, meta: EntryMeta, size: int) -> None:
        async def work() -> None:
            pipe = self.redis.client.pipeline(transaction=False)
            self.queue_add(pipe, entry_id, meta, size)
            await pipe.execute()

        await self._guard("add", work)

    async def remove(
        self, entry_ids: Iterable[str], *, listed_in: Iterable[str] = ()
    ) -> dict[str, Summary]:
        """Drop entries from the index (and from the sets `listed_in`, for members left by
        entries indexed before summaries existed); returns the summaries it held."""
        ids, extra = list(entry_ids), list(listed_in)

        async def core() -> list[Any]:
            pipe = self.redis.client.pipeline(transaction=False)
            for entry_id in ids:
                self.queue_remove(pipe, entry_id, None)
            for key in extra:
                pipe.zrem(key, *ids)
            return list(await pipe.execute())

        replies = await self._guard("remove", core)
        removed = {
            entry_id: summary
            for entry_id, raw in zip(ids, replies[: len(ids)], strict=True)
            if (summary := Summary.loads(raw)) is not None
        }
        await self.drop_members(removed)
        return removed

    async def drop_members(self, removed: dict[str, Summary]) -> None:
        """Remove entries from their per-voice, per-tag and per-generation sets."""
        if not removed:
            return

        async def members() -> None:
            pipe = self.redis.client.pipeline(transaction=False)
            for entry_id, summary in removed.items():
                for key in self.member_keys(summary):
                    pipe.zrem(key, entry_id)
            await pipe.execute()

        await self._guard("remove", members)

    # -- reads ----------------------------------------------------------------------------------

    async def summaries(self, entry_ids: list[str]) -> list[Summary | None]:
        if not entry_ids:
            return []
        found = await self._guard("read", lambda: self.redis.client.hmget(self.meta_key, entry_ids))
        return [Summary.loads(raw) for raw in found]

    async def complete(self) -> bool:
        """Whether every stored entry is indexed (the store was adopted, see the tiers)."""
        if not self._complete:
            flag = await self._guard(
                "read", lambda: self.redis.client.hget(self.stats_key, "complete")
            )
            self._complete = flag is not None
        return self._complete

    async def mark_complete(self) -> None:
        await self._guard("adopt", lambda: self.redis.client.hset(self.stats_key, "complete", 1))
        self._complete = True

    async def cursor(self, name: str) -> str | None:
        """A resumable position of a long pass (adoption, audit), shared by every process."""
        raw = await self._guard("cursor", lambda: self.redis.client.hget(self.stats_key, name))
        return None if raw is None else _text(raw)

    async def set_cursor(self, name: str, value: str | None) -> None:
        client = self.redis.client
        if value is None:
            await self._guard("cursor", lambda: client.hdel(self.stats_key, name))
        else:
            await self._guard("cursor", lambda: client.hset(self.stats_key, name, value))

    async def counters(self) -> tuple[int, int]:
        """(entries not yet past their grace period, bytes of indexed entries): two commands,
        whatever the number of entries. Bytes still count entries past their grace period
        until the sweeper removes them."""
        now = self.clock()

        async def read() -> list[Any]:
            pipe = self.redis.client.pipeline(transaction=False)
            pipe.zcount(self.expiry_key, f"({now}", "+inf")
            pipe.hget(self.stats_key, "bytes")
            return list(await pipe.execute())

        entries, size = await self._guard("stats", read)
        return int(entries), int(size or 0)

    async def find(self, *, voice: str | None, tag: str | None) -> list[str]:
        """Ids listed under this voice and this tag (both given: in both), not yet past their
        grace period. Members may outlive entries Redis dropped on its own."""
        keys = []
        if voice is not None:
            keys.append(self.voice_key(voice))
        if tag is not None:
            keys.append(self.tag_key(tag))
        now = self.clock()

        async def read() -> list[set[str]]:
            pipe = self.redis.client.pipeline(transaction=False)
            for key in keys:
                pipe.zrangebyscore(key, now, "+inf")
            return [{_text(m) for m in found} for found in await pipe.execute()]

        return sorted(set.intersection(*await self._guard("find", read)))

    # -- scopes ---------------------------------------------------------------------------------

    def answers(self, scope: object) -> bool:
        """Whether `matching` can answer `scope` (a purge filter without a key, or a sweep)."""
        if isinstance(scope, FilterScope):
            return scope.key is None
        return isinstance(scope, UnreachableScope)

    async def matching(
        self, scope: object, resolve: Resolver | None = None
    ) -> AsyncIterator[list[Match]]:
        """Batches of indexed entries `scope` covers, found through the cheapest index set and
        decided on their summaries: no entry is read. The caller deletes each batch (and
        removes it from the index) before asking for the next.

        A set member without a summary was left by an entry removed elsewhere, or written by
        a process that predates the index (during a rolling upgrade): `resolve` reads those
        entries' headers (and indexes them); without it, or when they are gone, the members
        are dropped."""
        decide: Callable[[str, EntryMeta], bool] = scope.matches  # type: ignore[attr-defined]
        async for source, batch, raws in self._candidates(scope):
            summaries = (
                [Summary.loads(raw) for raw in raws]
                if raws is not None
                else await self.summaries(batch)
            )
            known = {i: s for i, s in zip(batch, summaries, strict=True) if s is not None}
            unknown = [entry_id for entry_id in batch if entry_id not in known]
            if unknown:
                found = await resolve(unknown) if resolve is not None else {}
                known.update(found)
                gone = [entry_id for entry_id in unknown if entry_id not in found]
                if gone and source != self.meta_key:
                    await self._guard("prune", partial(self.redis.client.zrem, source, *gone))
            matched = [
                (entry_id, known[entry_id])
                for entry_id in batch
                if entry_id in known and decide(entry_id, known[entry_id].meta(entry_id))
            ]
            if matched:
                yield matched

    async def _candidates(
        self, scope: object
    ) -> AsyncIterator[tuple[str, list[str], list[Any] | None]]:
        """(set read, ids, their summaries when the read returned them) per batch."""
        if isinstance(scope, UnreachableScope):
            async for batch in self._range(self.expiry_key, "-inf", scope.now):
                yield self.expiry_key, batch, None
            for engine, version in await self.generations():
                current = scope.model_versions.get(engine)
                if current is not None and version != current:
                    key = self.gen_key(engine, version)
                    async for batch in self._range(key, "-inf", "+inf"):
                        yield key, batch, None
                    await self.drop_generation(engine, version)
            return
        assert isinstance(scope, FilterScope)
        if scope.voice is not None or scope.tag is not None:
            key = self.voice_key(scope.voice) if scope.voice else self.tag_key(scope.tag or "")
            async for batch in self._range(key, "-inf", "+inf"):
                yield key, batch, None
        elif not scope.all and (scope.engine is not None or scope.model_version is not None):
            for engine, version in await self.generations():
                if scope.engine in (None, engine) and scope.model_version in (None, version):
                    key = self.gen_key(engine, version)
                    async for batch in self._range(key, "-inf", "+inf"):
                        yield key, batch, None
        elif not scope.all and scope.expired:
            # Past the TTL: the grace period ends at most the longest grace from now.
            grace = await self._guard(
                "read", lambda: self.redis.client.hget(self.stats_key, "grace")
            )
            async for batch in self._range(self.expiry_key, "-inf", scope.now + float(grace or 0)):
                yield self.expiry_key, batch, None
        else:  # `all`, or `older_than` alone: every summary (index keys only)
            async for ids, raws in self._all():
                yield self.meta_key, ids, raws

    async def generations(self) -> list[tuple[str, str]]:
        members = await self._guard("read", lambda: self.redis.client.smembers(self.gens_key))
        pairs = []
        for member in members:
            engine, version = json.loads(member)
            pairs.append((str(engine), str(version)))
        return sorted(pairs)

    async def drop_generation(self, engine: str, version: str) -> None:
        """Forget a generation the sweeper emptied (unless an entry of it arrived since)."""
        key = self.gen_key(engine, version)
        if await self._guard("read", lambda: self.redis.client.zcard(key)) == 0:
            member = json.dumps([engine, version])
            await self._guard("forget", lambda: self.redis.client.srem(self.gens_key, member))

    async def _range(self, key: str, low: Any, high: Any) -> AsyncIterator[list[str]]:
        """Members scored in [low, high], a batch at a time, lowest first. The caller removes
        what it matched before the next batch; the members it kept stay ahead of the offset.
        The pass ends after as many candidates as the range held when it started (plus a
        batch), so a delete that keeps failing cannot loop forever."""
        client = self.redis.client
        total = int(await self._guard("read", lambda: client.zcount(key, low, high)))
        offset = seen = 0
        while seen < total + BATCH:

            async def page(offset: int = offset) -> list[Any]:
                return list(await client.zrangebyscore(key, low, high, start=offset, num=BATCH))

            batch = [_text(member) for member in await self._guard("read", page)]
            if not batch:
                return
            seen += len(batch)
            yield batch
            offset += await self._still_listed(key, batch)

    async def _still_listed(self, key: str, batch: list[str]) -> int:
        async def read() -> list[Any]:
            pipe = self.redis.client.pipeline(transaction=False)
            for member in batch:
                pipe.zscore(key, member)
            return list(await pipe.execute())

        return sum(score is not None for score in await self._guard("read", read))

    async def _all(self) -> AsyncIterator[tuple[list[str], list[Any]]]:
        """Every indexed id with its summary (HSCAN: tolerates deletes behind the cursor)."""
        cursor = 0
        while True:

            async def page(cursor: int = cursor) -> tuple[int, dict[Any, Any]]:
                found = await self.redis.client.hscan(self.meta_key, cursor, count=BATCH)
                return int(found[0]), dict(found[1])

            cursor, items = await self._guard("read", page)
            if items:
                yield [_text(key) for key in items], list(items.values())
            if cursor == 0:
                return
