"""The S3 tier's bucket: one aioboto3 client behind a circuit breaker, object naming, and the
paced operations of long passes (listing pages, header reads, bulk deletes, the pass cursor).

`tiers/s3.py` decides what to store and delete; this module knows how to talk to S3. Requests
that serve a client (get, put, delete of one object) go at once; requests of a pass over the
bucket (listing pages, ranged GETs of headers, DeleteObjects) each wait for the `Pacer`, so a
sweep of a large bucket costs a bounded number of requests per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from voicecache.cache.tiers.pacing import Pacer
from voicecache.circuit import CircuitBreaker
from voicecache.errors import StorageError
from voicecache.model import EntryMeta, read_header

T = TypeVar("T")
# What counts against the breaker; a missing object among them is an answer (`_is_missing`).
_FAILURES = (ClientError, TimeoutError, BotoCoreError, OSError)

HEADER_PROBE = 64 * 1024  # bytes read to parse a header (text ≤ 4000 chars, JSON-escaped)
_CONCURRENCY = 16  # header reads in flight during a pass
_DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)
MISSING = {"404", "NoSuchKey", "NotFound"}

Found = tuple[str, str, EntryMeta, int]  # object key, entry id, header, stored size


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    """A missing object: an answer from S3, not a failure of it."""
    return isinstance(exc, ClientError) and error_code(exc) in MISSING


class Bucket:
    """Objects `<prefix>/<id[:2]>/<id>` in one bucket, reached through one client."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str,
        pacer: Pacer,
        breaker: CircuitBreaker | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        **client_kwargs: Any,
    ) -> None:
        self.name = bucket
        self.prefix = prefix.strip("/")
        self.pacer = pacer
        self.breaker = breaker or CircuitBreaker(failures=3, cooldown=5.0)
        self.cursor_key = f"{self.prefix}/.sweep-cursor" if self.prefix else ".sweep-cursor"
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

    # -- names ------------------------------------------------------------------------------------

    def object_key(self, entry_id: str) -> str:
        """`<prefix>/<id[:2]>/<id>`."""
        if not entry_id or "/" in entry_id:
            raise StorageError(f"invalid entry id {entry_id!r}")
        name = f"{entry_id[:2]}/{entry_id}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def entry_of(self, key: str) -> str | None:
        """The entry id an object key holds, or None for other objects (the pass cursor)."""
        if self.prefix:
            if not key.startswith(self.prefix + "/"):
                return None
            key = key[len(self.prefix) + 1 :]
        fan, _, entry_id = key.partition("/")
        if not entry_id or "/" in entry_id or entry_id[:2] != fan:
            return None
        return entry_id

    # -- the client -------------------------------------------------------------------------------

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
        """Run one S3 operation through the circuit breaker; failures become `StorageError`
        (a missing object stays a `ClientError`, which is an answer, not a failure)."""
        if not self.breaker.allow():
            self.skipped += 1
            raise StorageError(f"s3 skipped for {what}: circuit open after repeated failures")
        try:
            return await self.breaker.run(work, _FAILURES, answer=_is_missing)
        except ClientError as exc:
            if _is_missing(exc):
                raise
            self.errors += 1
            raise StorageError(f"s3 {what} failed: {error_code(exc)}: {exc}") from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            self.errors += 1
            raise StorageError(f"s3 {what} failed: {type(exc).__name__}: {exc}") from exc

    # -- passes: paced ----------------------------------------------------------------------------

    async def pages(self, after: str | None, size: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Listing pages of entry objects (keys after `after`), one paced request each."""
        listing = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            await self.pacer.wait()
            args: dict[str, Any] = {"Bucket": self.name, "Prefix": listing, "MaxKeys": size}
            if token is not None:
                args["ContinuationToken"] = token
            elif after is not None:
                args["StartAfter"] = after

            async def page(args: dict[str, Any] = args) -> dict[str, Any]:
                client = await self.client()
                return dict(await client.list_objects_v2(**args))

            found = await self.guard("list", page)
            items = [item for item in found.get("Contents", ()) if self.entry_of(item["Key"])]
            if items:
                yield items
            token = found.get("NextContinuationToken")
            if not found.get("IsTruncated") or token is None:
                return

    async def heads(self, keys: list[str]) -> list[Found]:
        """Headers of these objects (paced ranged GETs, a few in flight); objects that are
        gone, foreign or unreadable are left out."""
        found: list[Found] = []
        for start in range(0, len(keys), _CONCURRENCY):
            batch = keys[start : start + _CONCURRENCY]
            heads = await asyncio.gather(*(self._head(key) for key in batch))
            for key, head in zip(batch, heads, strict=True):
                entry_id = self.entry_of(key)
                if head is not None and entry_id is not None:
                    found.append((key, entry_id, *head))
        return found

    async def _head(self, key: str) -> tuple[EntryMeta, int] | None:
        await self.pacer.wait()

        async def read() -> tuple[bytes, int]:
            client = await self.client()
            response = await client.get_object(
                Bucket=self.name, Key=key, Range=f"bytes=0-{HEADER_PROBE - 1}"
            )
            async with response["Body"] as stream:
                head = bytes(await stream.read())
            total = str(response.get("ContentRange", "")).rpartition("/")[2]
            return head, int(total) if total.isdigit() else int(response["ContentLength"])

        try:
            head, size = await self.guard("scan", read)
            return read_header(head), size
        except (ClientError, StorageError):
            return None

    async def delete(self, keys: list[str], *, paced: bool = True) -> int:
        """Delete objects, up to 1000 per request; returns the requests made."""
        requests = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            if paced:
                await self.pacer.wait()

            async def remove(batch: list[str] = batch) -> None:
                client = await self.client()
                if len(batch) == 1:
                    await client.delete_object(Bucket=self.name, Key=batch[0])
                    return
                reply = await client.delete_objects(
                    Bucket=self.name,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
                if reply.get("Errors"):
                    failed = reply["Errors"][0]
                    raise StorageError(f"s3 delete of {failed.get('Key')}: {failed.get('Code')}")

            await self.guard("delete", remove)
            requests += 1
        return requests

    async def load_cursor(self) -> str | None:
        """Where the last resumable pass stopped, from the cursor object."""

        async def read() -> str | None:
            client = await self.client()
            try:
                response = await client.get_object(Bucket=self.name, Key=self.cursor_key)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    return None
                raise
            async with response["Body"] as stream:
                after = json.loads(await stream.read()).get("after")
            return after if isinstance(after, str) else None

        return await self.guard("cursor", read)

    async def save_cursor(self, after: str | None) -> None:
        async def write() -> None:
            client = await self.client()
            if after is None:
                await client.delete_object(Bucket=self.name, Key=self.cursor_key)
            else:
                body = json.dumps({"after": after}).encode()
                await client.put_object(Bucket=self.name, Key=self.cursor_key, Body=body)

        await self.guard("cursor", write)

    async def check(self) -> None:
        """Raise `StorageError` unless the bucket exists and is readable (`voicecache doctor`)."""

        async def probe() -> None:
            client = await self.client()
            await client.head_bucket(Bucket=self.name)
            listing = f"{self.prefix}/" if self.prefix else ""
            await client.list_objects_v2(Bucket=self.name, Prefix=listing, MaxKeys=1)

        try:
            await self.guard("check", probe)
        except ClientError as exc:
            raise StorageError(f"s3 bucket {self.name!r}: {error_code(exc)}") from exc

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
