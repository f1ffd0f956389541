"""The local persistent tier: audio in files, an index in SQLite, one byte budget per directory.

Layout of a cache directory (python-diskcache's approach):

    index.sqlite3 (+ -wal, -shm)   the index every process on the host shares (`index.py`)
    ab/cd/<28 hex>.val              one file per entry: `Entry.to_bytes()` (`files.py`)

Start-up opens the index and nothing else, whatever the number of entries; a lookup is one
indexed query and one file read. Sweeps, purges, `find` and `stats()` read the index and never
open an entry file. All of the blocking work runs in a small thread pool of the tier's own,
off the event loop; migration of the pre-index layout and reconciliation of index and files
run in a background thread (`maintenance.py`).

A corrupt or truncated file is never served: a read checks the file's size, framing and the
audio's checksum against the header in the index, and a mismatch deletes the entry (a miss,
so the gateway synthesizes again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from voicecache.cache.tiers.disk import query
from voicecache.cache.tiers.disk.maintenance import DiskMaintenance, Maintainer
from voicecache.cache.tiers.disk.store import DiskPolicy, DiskStore, check_id, pinned_budget
from voicecache.model import Entry, EntryMeta, Tier, TierStats

__all__ = ["DiskMaintenance", "DiskPolicy", "DiskTier", "pinned_budget"]

T = TypeVar("T")
_SCAN_BATCH = 512
_DELETE_BATCH = 500  # rows per transaction when a purge or sweep deletes by query


class DiskTier(Tier):
    """Entries as files under `directory`, at most `max_bytes` in all, whichever processes
    write them; pinned entries at most `pinned_bytes` of that (default: half)."""

    name = "disk"

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        pinned_bytes: int | None = None,
        policy: DiskPolicy = "lru",
        clock: Callable[[], float] = time.time,
        io_threads: int = 4,
        maintenance: DiskMaintenance | None = None,
    ) -> None:
        self.root = Path(directory)
        self.capacity_bytes = max_bytes
        self.store = DiskStore(
            self.root, max_bytes, pinned_bytes=pinned_bytes, policy=policy, clock=clock
        )
        self.pinned_capacity = self.store.pinned_capacity
        self.maintenance = maintenance or DiskMaintenance()
        self.maintainer = Maintainer(self.store, self.maintenance)
        self._io_threads = max(1, io_threads)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid: int | None = None
        self._ready = False
        self._pending_deletes: list[tuple[str, asyncio.Future[int]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # A tier dropped without `aclose()` still stops its thread and closes its index.
        self._finalizer = weakref.finalize(
            self, _shutdown, self.maintainer, self.store, None, wait=False
        )

    # -- counters the metrics layer reads ------------------------------------------------------

    @property
    def evictions(self) -> int:
        return self.store.evictions

    @property
    def errors(self) -> int:
        return self.store.errors

    @property
    def pinned_rejected(self) -> int:
        """Pinned entries stored unpinned because the pinned budget was full."""
        return self.store.pinned_rejected

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(self._io_threads, "voicecache-disk")
            self._executor_pid = os.getpid()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(
                self, _shutdown, self.maintainer, self.store, self._executor, wait=False
            )
        if not self._ready:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def _open(self) -> None:
        self.store.open()
        if self.maintenance.background:
            self.maintainer.start()
        self._ready = True

    # -- the tier protocol ---------------------------------------------------------------------

    async def get(self, entry_id: str) -> Entry | None:
        check_id(entry_id)
        return await self._run(self.store.get, entry_id)

    async def read(self, entry_id: str) -> Entry | None:
        """`get` without the checksum (index row, file size and header still checked)."""
        check_id(entry_id)
        return await self._run(self.store.get, entry_id, False)

    async def set(self, entry_id: str, entry: Entry) -> None:
        check_id(entry_id)
        await self._run(self.store.set, entry_id, entry)

    async def delete(self, entry_id: str) -> int:
        """Deletes issued in the same loop iteration (a purge's batch) share one transaction."""
        check_id(entry_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending_deletes.append((entry_id, future))
        if len(self._pending_deletes) == 1:
            loop.call_soon(self._flush_deletes, loop)
        return await future

    def _flush_deletes(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending_deletes = self._pending_deletes, []
        task = loop.create_task(self._delete_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete_batch(self, batch: list[tuple[str, asyncio.Future[int]]]) -> None:
        try:
            sizes = await self._run(self.store.delete, [entry_id for entry_id, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), size in zip(batch, sizes, strict=True):
            if not future.done():
                future.set_result(size)

    async def touch(self, entry_id: str, meta: EntryMeta) -> None:
        """Sliding expiry updates the index only; no file is rewritten."""
        check_id(entry_id)
        await self._run(self.store.touch, entry_id, meta)

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        """Every entry's header, from the index in batches (no entry file is opened)."""
        await self._complete_migration()
        after = 0
        while True:
            batch = await self._run(self.store.scan_batch, after, _SCAN_BATCH)
            for rowid, entry_id, meta in batch:
                after = rowid
                yield entry_id, meta
            if len(batch) < _SCAN_BATCH:
                return

    async def find(
        self,
        *,
        voice: str | None = None,
        tag: str | None = None,
        engine: str | None = None,
        model_version: str | None = None,
    ) -> list[str] | None:
        """Ids by voice, tag, engine and/or model version, from the index."""
        given = {"voice": voice, "tag": tag, "engine": engine, "model_version": model_version}
        conditions = {name: value for name, value in given.items() if value is not None}
        if not conditions:
            return None  # nothing to look up (the contract: the caller scans)
        await self._complete_migration()
        return await self._run(self.store.find, conditions)

    async def _complete_migration(self) -> None:
        """Purges and sweeps must see every entry: while old-layout files wait for the
        background migration, finish it here first (once in the directory's lifetime)."""
        if not self._ready:
            await self._run(self.store.counters)
        if not self.store.migrated:
            await self.migrate()

    async def delete_matching(self, scope: object) -> tuple[int, int] | None:
        """Delete what a purge or sweep scope covers by querying the index, in batches;
        returns (entries, bytes), or None when the scope cannot be put as a query."""
        condition = query.where(scope)
        if condition is None:
            return None
        await self._complete_migration()
        entries = freed = 0
        while True:
            sizes = await self._run(self.store.delete_where, *condition, _DELETE_BATCH)
            entries += len(sizes)
            freed += sum(sizes)
            if len(sizes) < _DELETE_BATCH:
                return entries, freed

    async def locate(self, entry_id: str) -> Path | None:
        """The file that holds `entry_id`, if stored (tests and tooling)."""
        return await self._run(self.store.locate, entry_id)

    async def stats(self) -> TierStats:
        counters = await self._run(self.store.counters)
        reconciler = self.maintainer.reconciler
        return TierStats(
            name=self.name,
            entries=counters.entries,
            bytes=counters.bytes,
            capacity_bytes=self.capacity_bytes,
            evictions=self.store.evictions,
            errors=self.store.errors,
            extra={
                "pinned_entries": counters.pinned_entries,
                "pinned_bytes": counters.pinned_bytes,
                "pinned_capacity_bytes": self.pinned_capacity,
                "pinned_rejected": self.store.pinned_rejected,
                "migrated": self.store.migrated,
                "lost": self.store.lost,
                "strays_removed": reconciler.files_removed,
            },
        )

    # -- maintenance, on demand ----------------------------------------------------------------

    async def flush(self) -> None:
        """Write the last-access times noted by hits (the maintainer does it every tick)."""
        await self._run(self.store.flush_touches)

    async def migrate(self) -> int:
        """Run the migration of the pre-index layout to the end, here; returns entries adopted."""
        migration = self.maintainer.migration
        while not await self._run(migration.step):
            pass
        return migration.adopted

    async def reconcile(self) -> None:
        """One whole reconciliation pass, here (the maintainer paces passes by itself)."""
        while not await self._run(self.maintainer.reconciler.step):
            pass

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        self._finalizer.detach()
        await asyncio.to_thread(_shutdown, self.maintainer, self.store, executor)
        self._ready = False


def _shutdown(
    maintainer: Maintainer,
    store: DiskStore,
    executor: ThreadPoolExecutor | None,
    *,
    wait: bool = True,
) -> None:
    """Stop the background thread, write pending hit times, close the index and the pool.

    A finalizer passes `wait=False`: it may run in one of the pool's own threads."""
    maintainer.stop(timeout=10.0 if wait else 0.0)
    if executor is not None:
        executor.shutdown(wait=wait)
    # Never raise at interpreter exit or in a finalizer.
    with contextlib.suppress(Exception):
        maintainer.release()
    with contextlib.suppress(Exception):
        store.close()
