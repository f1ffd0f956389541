"""The cold tier on S3-compatible object storage (AWS S3, MinIO, Ceph, moto…), via aioboto3.

One object per entry, named `<prefix>/<id[:2]>/<id>` (the two-character fan-out spreads keys
over S3's partitions, as the disk tier spreads files over folders).

Where the header lives, and why: the body is `Entry.to_bytes()` — the same self-describing,
checksummed format as the disk and Redis tiers — so the full header, including the spoken text
(up to 4000 characters, often CJK), travels with the audio. S3 caps user metadata at 2 KB and
allows only ASCII there, which the text does not fit. Object metadata carries a small ASCII
summary instead (`vc-key`, `vc-format`, `vc-voice`, `vc-engine`, `vc-expires-at`,
`vc-stale-until`, URL-encoded `vc-tags`), enough for operators and `aws s3api head-object` to
see what an object is and when it expires. Objects that expire carry the tag
`voicecache-expiry-days=<1|7|30|90|365>` (the smallest class that outlives their grace period),
so an S3 lifecycle rule per class can expire them without any request from us (README).

Finding entries without reading them: with Redis configured, the bucket's index lives in Redis
(`tiers/index.py`, under `<redis prefix>:s3ix:<bucket>/<prefix>`): every object is indexed
before it is written, so purges by voice, tag, model version or expiry, the sweeper and
`stats()` read the index and touch only the objects they delete. A bucket written before the
index existed is adopted by the first listing pass (the sweeper's, resumable). Without Redis,
or until adopted, a sweep is a listing pass: pages of the listing, a ranged GET of each
object's header, paced to `requests_per_second` and, for the sweeper, at most `sweep_budget`
requests per pass, resuming where the last pass stopped (its position is kept in Redis, or in
the object `<prefix>/.sweep-cursor`). `stats()` then counts a listing at most every
`stats_max_age` seconds.

Expiry is checked on read: an object past `stale_until` is deleted and reported absent.
Credentials come from the standard `AWS_*` variables (or any other source in botocore's
chain). Failures are `StorageError`s behind a `CircuitBreaker`, as for Redis.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from voicecache.cache.tiers.index import RedisConnection, StoreIndex, Summary
from voicecache.cache.tiers.pacing import Pacer
from voicecache.cache.tiers.s3_bucket import MISSING, Bucket, Found, error_code
from voicecache.cache.tiers.scopes import FilterScope, UnreachableScope
from voicecache.circuit import CircuitBreaker
from voicecache.errors import StorageError
from voicecache.model import Entry, EntryMeta, Tier, TierStats

# Lifetimes (days) an object can be tagged with for lifecycle rules; longer ones are not tagged.
LIFECYCLE_DAYS = (1, 7, 30, 90, 365)
LIFECYCLE_TAG = "voicecache-expiry-days"


class S3Tier(Tier):
    """Entries as objects in `bucket` under `prefix` (indexed in Redis when `redis` is given)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "voicecache",
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
        redis: RedisConnection | None = None,
        requests_per_second: float = 100.0,
        sweep_budget: int = 15_000,
        stats_max_age: float = 300.0,
        pacer: Pacer | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.store = Bucket(
            bucket,
            prefix=prefix,
            # Passes over the bucket go at this pace; requests serving a client never wait.
            pacer=pacer or Pacer(requests_per_second),
            breaker=breaker,
            endpoint_url=endpoint_url,
            region=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            **client_kwargs,
        )
        self.bucket = bucket
        self.prefix = self.store.prefix
        self.breaker = self.store.breaker
        self.clock = clock
        self.index = (
            None
            if redis is None
            else StoreIndex(
                redis, f"{redis.prefix}:s3ix:{bucket}/{self.prefix}", clock=lambda: self.clock()
            )
        )
        self.sweep_budget = sweep_budget
        self.page_size = 200  # keys per listing page in a pass (the budget is checked per page)
        self.stats_max_age = stats_max_age
        self._listed: tuple[float, int, int] | None = None  # (monotonic time, entries, bytes)
        self.corrupt = 0

    @property
    def errors(self) -> int:
        return self.store.errors + self.corrupt

    @property
    def pacer(self) -> Pacer:
        return self.store.pacer

    def object_key(self, entry_id: str) -> str:
        """`<prefix>/<id[:2]>/<id>`."""
        return self.store.object_key(entry_id)

    async def _indexed(self) -> bool:
        """Whether the Redis index holds every object (so it can answer for the bucket)."""
        if self.index is None:
            return False
        try:
            return await self.index.complete()
        except StorageError:
            return False

    # -- Tier protocol ----------------------------------------------------------------------------

    async def get(self, entry_id: str) -> Entry | None:
        key = self.object_key(entry_id)

        async def read() -> bytes:
            client = await self.store.client()
            response = await client.get_object(Bucket=self.store.name, Key=key)
            async with response["Body"] as stream:
                return bytes(await stream.read())

        try:
            blob = await self.store.guard("get", read)
        except ClientError:
            return None
        try:
            entry = Entry.from_bytes(blob)
        except StorageError:
            self.corrupt += 1
            await self.delete(entry_id)
            return None
        stale_until = entry.meta.stale_until
        if stale_until is not None and self.clock() >= stale_until:
            await self.delete(entry_id)
            return None
        return entry

    async def set(self, entry_id: str, entry: Entry) -> None:
        meta = entry.meta
        now = self.clock()
        if meta.stale_until is not None and now >= meta.stale_until:
            return
        key = self.object_key(entry_id)
        blob = entry.to_bytes()
        if self.index is not None:
            # Indexed before it is written: an object the index does not know would escape
            # purges and sweeps. Redis unavailable → the object is not stored.
            try:
                await self.index.add(entry_id, meta, len(blob))
            except StorageError as exc:
                raise StorageError(f"s3 write skipped, its index is unavailable: {exc}") from exc
        extra: dict[str, str] = {}
        lifetime = lifecycle_tag(meta, now)
        if lifetime is not None:
            extra["Tagging"] = lifetime

        async def write() -> None:
            client = await self.store.client()
            await client.put_object(
                Bucket=self.store.name,
                Key=key,
                Body=blob,
                ContentType="application/x-voicecache-entry",
                Metadata=_metadata(meta),
                **extra,
            )

        await self.store.guard("set", write)

    async def delete(self, entry_id: str) -> int:
        key = self.object_key(entry_id)
        if await self._indexed():
            assert self.index is not None
            await self.store.delete([key], paced=False)
            removed = await self.index.remove([entry_id])
            return removed[entry_id].size if entry_id in removed else 0

        async def remove() -> int:
            client = await self.store.client()
            try:
                head = await client.head_object(Bucket=self.store.name, Key=key)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    return 0
                raise
            await client.delete_object(Bucket=self.store.name, Key=key)
            return int(head.get("ContentLength", 0))

        freed = await self.store.guard("delete", remove)
        if self.index is not None:
            with contextlib.suppress(StorageError):
                await self.index.remove([entry_id])
        return freed

    async def find(self, *, voice: str | None = None, tag: str | None = None) -> list[str] | None:
        """Ids with this voice and/or tag from the Redis index (None without a complete one)."""
        if (voice is None and tag is None) or not await self._indexed():
            return None
        assert self.index is not None
        return await self.index.find(voice=voice, tag=tag)

    # -- sweeps and purges -------------------------------------------------------------------------

    async def delete_matching(self, scope: object) -> tuple[int, int] | None:
        """Delete what a purge or sweep scope covers: through the Redis index when it is
        complete, else by a paced listing pass (the sweeper's resumes and stops after
        `sweep_budget` requests). None for a purge by key (the caller deletes its ids)."""
        if isinstance(scope, FilterScope):
            if scope.key is not None:
                return None
        elif not isinstance(scope, UnreachableScope):
            return None
        if await self._indexed():
            return await self._delete_indexed(scope)
        return await self._listing_pass(scope, resumable=isinstance(scope, UnreachableScope))

    async def _delete_indexed(self, scope: object) -> tuple[int, int]:
        assert self.index is not None
        entries = freed = 0
        async for batch in self.index.matching(scope, self._resolve):
            await self.store.delete([self.object_key(entry_id) for entry_id, _ in batch])
            await self.index.remove([entry_id for entry_id, _ in batch])
            entries += len(batch)
            freed += sum(summary.size for _, summary in batch)
        return entries, freed

    async def _resolve(self, entry_ids: list[str]) -> dict[str, Summary]:
        """Summaries of objects the index lists without one, from their headers (indexed on
        the way); objects that are gone are left out."""
        found = await self.store.heads([self.object_key(entry_id) for entry_id in entry_ids])
        await self._index_found(found)
        return {entry_id: Summary.of(meta, size) for _, entry_id, meta, size in found}

    async def adopt(self) -> int:
        """Index every object of the bucket (a full listing pass, paced): what the sweeper's
        passes do over time, at once (tests, tools). Returns the objects indexed."""
        if self.index is None:
            return 0
        before = await self.index.counters()
        await self._listing_pass(None, resumable=False)
        return (await self.index.counters())[0] - before[0]

    async def _listing_pass(self, scope: object | None, *, resumable: bool) -> tuple[int, int]:
        """Every object's header, page by page, deleting what `scope` matches. With an
        incomplete index, every header read is indexed, and a pass that reaches the end of
        the listing completes the index."""
        decide: Callable[[str, EntryMeta], bool] = (
            (lambda entry_id, meta: False) if scope is None else scope.matches  # type: ignore[attr-defined]
        )
        after = await self._load_cursor() if resumable else None
        spent = entries = freed = 0
        async for page in self.store.pages(after, self.page_size):
            spent += 1 + len(page)
            found = await self.store.heads([item["Key"] for item in page])
            await self._index_found(found)
            doomed = [(key, entry_id, size) for key, entry_id, meta, size in found
                      if decide(entry_id, meta)]  # fmt: skip
            if doomed:
                spent += await self.store.delete([key for key, _, _ in doomed])
                if self.index is not None:
                    await self.index.remove([entry_id for _, entry_id, _ in doomed])
                entries += len(doomed)
                freed += sum(size for _, _, size in doomed)
            if resumable and spent >= self.sweep_budget:
                await self._save_cursor(page[-1]["Key"])
                return entries, freed
        if resumable:
            await self._save_cursor(None)
        if self.index is not None:
            await self.index.mark_complete()
        return entries, freed

    async def _load_cursor(self) -> str | None:
        """Where the last resumable pass stopped: in Redis with an index, else in S3."""
        if self.index is not None:
            return await self.index.cursor("sweep")
        return await self.store.load_cursor()

    async def _save_cursor(self, after: str | None) -> None:
        if self.index is not None:
            await self.index.set_cursor("sweep", after)
        else:
            await self.store.save_cursor(after)

    async def _index_found(self, found: list[Found]) -> None:
        if self.index is None or not found:
            return
        index = self.index

        async def add() -> None:
            pipe = index.redis.client.pipeline(transaction=False)
            for _, entry_id, meta, size in found:
                index.queue_add(pipe, entry_id, meta, size)
            await pipe.execute()

        await index.redis.guard("index adopt", add)

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every object under the prefix with its header (paced: for tools and inspection)."""
        async for page in self.store.pages(None, 1000):
            for _, entry_id, meta, _ in await self.store.heads([item["Key"] for item in page]):
                yield entry_id, meta

    async def stats(self) -> TierStats:
        """Entries and bytes from the Redis index's counters; without one, from a listing of
        the bucket made at most every `stats_max_age` seconds (no per-scrape LIST)."""
        stats = TierStats(
            name=self.name,
            errors=self.errors,
            extra={"circuit": self.breaker.state, "skipped": self.store.skipped},
        )
        if await self._indexed():
            assert self.index is not None
            with contextlib.suppress(StorageError):
                stats.entries, stats.bytes = await self.index.counters()
                stats.extra["indexed"] = True
                return stats
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] >= self.stats_max_age:

            async def listing() -> tuple[int, int]:
                count = size = 0
                async for page in self.store.pages(None, 1000):
                    count += len(page)
                    size += sum(int(item.get("Size", 0)) for item in page)
                return count, size

            with contextlib.suppress(StorageError):
                self._listed = (now, *await listing())
        if self._listed is not None:
            stats.entries, stats.bytes = self._listed[1:]
            stats.extra["listed_seconds_ago"] = round(now - self._listed[0], 1)
        return stats

    async def check(self) -> None:
        """Raise `StorageError` unless the bucket exists and is readable (`voicecache doctor`)."""
        await self.store.check()

    async def aclose(self) -> None:
        await self.store.aclose()


def lifecycle_tag(meta: EntryMeta, now: float) -> str | None:
    """`voicecache-expiry-days=<d>` for the smallest lifecycle class that outlives the entry's
    grace period (None: pinned, or longer than a year: left to the sweeper)."""
    if meta.stale_until is None:
        return None
    days = math.ceil(max(0.0, meta.stale_until - now) / 86400)
    for limit in LIFECYCLE_DAYS:
        if days <= limit:
            return f"{LIFECYCLE_TAG}={limit}"
    return None


def _metadata(meta: EntryMeta) -> dict[str, str]:
    """An ASCII-only summary of the header for object metadata (the full header is in the
    body: S3 metadata is limited to 2 KB of ASCII)."""

    def expiry(value: float | None) -> str:
        return "never" if value is None else f"{value:.3f}"

    return {
        "vc-key": meta.key,
        "vc-format": meta.format,
        "vc-voice": quote(meta.voice, safe=""),
        "vc-engine": quote(meta.engine, safe=""),
        "vc-expires-at": expiry(meta.expires_at),
        "vc-stale-until": expiry(meta.stale_until),
        "vc-tags": quote(",".join(meta.tags), safe=",")[:512],
    }
