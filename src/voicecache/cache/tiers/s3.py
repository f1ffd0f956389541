"""The cold tier on S3-compatible object storage (AWS S3, MinIO, Ceph, moto…), via aioboto3.

One object per entry, named `<prefix>/<id[:2]>/<id>` (the two-character fan-out spreads keys
over S3's partitions, as the disk tier spreads files over folders).

Where the header lives, and why: the body is `Entry.to_bytes()` — the same self-describing,
checksummed format as the disk and Redis tiers — so the full header, including the spoken text
(up to 4000 characters, often CJK), travels with the audio. S3 caps user metadata at 2 KB and
allows only ASCII there, which the text does not fit. Object metadata carries a small ASCII
summary instead (`vc-key`, `vc-format`, `vc-voice`, `vc-engine`, `vc-expires-at`,
`vc-stale-until`, URL-encoded `vc-tags`), enough for operators and `aws s3api head-object` to
see what an object is and when it expires. `scan` reads each header with one ranged GET of
the first 64 KiB, which costs the same one request per object as a HEAD would.

Expiry is checked on read: an object past `stale_until` is deleted and reported absent.
Credentials come from the standard `AWS_*` variables (or any other source in botocore's
chain). Failures are `StorageError`s behind a `CircuitBreaker`, as for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from voicecache.circuit import CircuitBreaker
from voicecache.errors import StorageError
from voicecache.model import Entry, EntryMeta, Tier, TierStats, read_header

T = TypeVar("T")

HEADER_PROBE = 64 * 1024
_SCAN_CONCURRENCY = 16
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Tier(Tier):
    """Entries as objects in `bucket` under `prefix`."""

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
        **client_kwargs: Any,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.clock = clock
        self.breaker = breaker or CircuitBreaker(failures=3, cooldown=5.0)
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "config": Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
            **client_kwargs,
        }
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._open_lock = asyncio.Lock()
        self.errors = 0
        self.skipped = 0

    def object_key(self, entry_id: str) -> str:
        """`<prefix>/<id[:2]>/<id>`."""
        if not entry_id or "/" in entry_id:
            raise StorageError(f"invalid entry id {entry_id!r}")
        name = f"{entry_id[:2]}/{entry_id}"
        return f"{self.prefix}/{name}" if self.prefix else name

    async def client(self) -> Any:
        """The S3 client, opened on first use."""
        if self._client is None:
            async with self._open_lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    session = aioboto3.Session()
                    self._client = await stack.enter_async_context(
                        session.client("s3", **self._client_args)
                    )
                    self._stack = stack
        return self._client

    async def guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run one S3 operation through the circuit breaker; failures become `StorageError`."""
        if not self.breaker.allow():
            self.skipped += 1
            raise StorageError(f"s3 skipped for {what}: circuit open after repeated failures")
        probe = self.breaker.probing  # right after allow(): whether this call is the probe
        try:
            result = await work()
        except asyncio.CancelledError:  # no verdict: a cancelled probe must not block the next
            if probe:
                self.breaker.release_probe()
            raise
        except ClientError as exc:
            if _code(exc) in _MISSING:
                self.breaker.success()
                raise
            self._failed()
            raise StorageError(f"s3 {what} failed: {_code(exc)}: {exc}") from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            self._failed()
            raise StorageError(f"s3 {what} failed: {type(exc).__name__}: {exc}") from exc
        self.breaker.success()
        return result

    def _failed(self) -> None:
        self.breaker.failure()
        self.errors += 1

    async def get(self, entry_id: str) -> Entry | None:
        key = self.object_key(entry_id)

        async def read() -> bytes:
            client = await self.client()
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                return bytes(await stream.read())

        try:
            blob = await self.guard("get", read)
        except ClientError:
            return None
        try:
            entry = Entry.from_bytes(blob)
        except StorageError:
            self.errors += 1
            await self.delete(entry_id)
            return None
        stale_until = entry.meta.stale_until
        if stale_until is not None and self.clock() >= stale_until:
            await self.delete(entry_id)
            return None
        return entry

    async def set(self, entry_id: str, entry: Entry) -> None:
        meta = entry.meta
        if meta.stale_until is not None and self.clock() >= meta.stale_until:
            return
        key = self.object_key(entry_id)
        blob = entry.to_bytes()

        async def write() -> None:
            client = await self.client()
            await client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=blob,
                ContentType="application/x-voicecache-entry",
                Metadata=_metadata(meta),
            )

        await self.guard("set", write)

    async def delete(self, entry_id: str) -> int:
        key = self.object_key(entry_id)

        async def remove() -> int:
            client = await self.client()
            try:
                head = await client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return 0
                raise
            await client.delete_object(Bucket=self.bucket, Key=key)
            return int(head.get("ContentLength", 0))

        return await self.guard("delete", remove)

    async def _objects(self) -> AsyncIterator[dict[str, Any]]:
        client = await self.client()
        paginator = client.get_paginator("list_objects_v2")
        listing = f"{self.prefix}/" if self.prefix else ""
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=listing):
            for item in page.get("Contents", ()):
                yield item

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every object under the prefix, with the header read by a ranged GET."""

        async def listing() -> list[dict[str, Any]]:
            return [item async for item in self._objects()]

        items = await self.guard("scan", listing)
        for start in range(0, len(items), _SCAN_CONCURRENCY):
            batch = items[start : start + _SCAN_CONCURRENCY]
            heads = await asyncio.gather(
                *(self._head(item["Key"]) for item in batch), return_exceptions=True
            )
            for item, head in zip(batch, heads, strict=True):
                if isinstance(head, BaseException) or head is None:
                    continue
                yield item["Key"].rsplit("/", 1)[-1], head

    async def _head(self, key: str) -> EntryMeta | None:
        async def read() -> bytes:
            client = await self.client()
            response = await client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes=0-{HEADER_PROBE - 1}"
            )
            async with response["Body"] as stream:
                return bytes(await stream.read())

        try:
            return read_header(await self.guard("scan", read))
        except (ClientError, StorageError):
            return None

    async def stats(self) -> TierStats:
        """Objects and bytes under the prefix (a full listing: keep it off hot paths)."""
        stats = TierStats(
            name=self.name,
            errors=self.errors,
            extra={"circuit": self.breaker.state, "skipped": self.skipped},
        )

        async def listing() -> tuple[int, int]:
            count = size = 0
            async for item in self._objects():
                count += 1
                size += int(item.get("Size", 0))
            return count, size

        with contextlib.suppress(StorageError):
            stats.entries, stats.bytes = await self.guard("stats", listing)
        return stats

    async def check(self) -> None:
        """Raise `StorageError` unless the bucket exists and is readable (`voicecache doctor`)."""

        async def probe() -> None:
            client = await self.client()
            await client.head_bucket(Bucket=self.bucket)
            listing = f"{self.prefix}/" if self.prefix else ""
            await client.list_objects_v2(Bucket=self.bucket, Prefix=listing, MaxKeys=1)

        try:
            await self.guard("check", probe)
        except ClientError as exc:
            raise StorageError(f"s3 bucket {self.bucket!r}: {_code(exc)}") from exc

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


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
