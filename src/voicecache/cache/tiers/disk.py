"""The local persistent tier: one file per entry, bounded by bytes.

Layout follows python-diskcache: files fanned out over two levels of hex-named folders
(`ab/cd/<id>`), written to a temporary file in the same folder and moved into place with
`os.replace`, so a reader never sees half a file and a crash leaves at most a stray temp file.
Each file is `Entry.to_bytes()`, whose checksum is verified on read: a corrupt file is deleted
and reported as a miss, so the gateway re-synthesizes instead of serving garbage.

An in-memory index (id → size, in least-recently-used order) is rebuilt from the files at
start-up and drives eviction. File I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

from voicecache.cache.tiers.base import Entry, EntryMeta, Tier, TierStats, read_header
from voicecache.errors import StorageError
from voicecache.fileio import atomic_write

_HEADER_PROBE = 64 * 1024  # bytes read to parse a header during scans (text ≤ 4000 chars)


class DiskTier(Tier):
    """Entries as files under `root`, at most `capacity_bytes` in all."""

    name = "disk"

    def __init__(self, root: Path, capacity_bytes: int) -> None:
        self.root = Path(root)
        self.capacity_bytes = capacity_bytes
        self._index: OrderedDict[str, int] = OrderedDict()
        self._pinned: set[str] = set()
        self._used = 0
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self.evictions = 0
        self.errors = 0

    def _path(self, entry_id: str) -> Path:
        if not entry_id or "/" in entry_id or entry_id.startswith("."):
            raise StorageError(f"invalid entry id {entry_id!r}")
        return self.root / entry_id[:2] / entry_id[2:4] / entry_id

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if not self._loaded:
                found = await asyncio.to_thread(self._load_index)
                for entry_id, size, pinned in found:
                    self._index[entry_id] = size
                    self._used += size
                    if pinned:
                        self._pinned.add(entry_id)
                self._loaded = True

    def _load_index(self) -> list[tuple[str, int, bool]]:
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[tuple[str, float, int, bool]] = []
        for path in self.root.glob("*/*/*"):
            if path.name.startswith("."):
                # A temp file left by a crash mid-write.
                path.unlink(missing_ok=True)
                continue
            try:
                stat = path.stat()
                with path.open("rb") as handle:
                    meta = read_header(handle.read(_HEADER_PROBE))
            except (OSError, StorageError):
                path.unlink(missing_ok=True)
                continue
            found.append((path.name, stat.st_atime, stat.st_size, meta.pinned))
        found.sort(key=lambda item: item[1])  # least recently used first
        return [(entry_id, size, pinned) for entry_id, _, size, pinned in found]

    async def get(self, entry_id: str) -> Entry | None:
        await self._ensure_loaded()
        path = self._path(entry_id)
        # Another process sharing the directory (a second worker, `voicecache warm`) may have
        # written the file since our index was built: a stat is cheap next to a synthesis.
        if entry_id not in self._index and not path.exists():
            return None
        try:
            blob = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            self._forget(entry_id)
            return None
        try:
            entry = Entry.from_bytes(blob)
        except StorageError:
            self.errors += 1
            await self.delete(entry_id)
            return None
        if entry_id in self._index:
            self._index.move_to_end(entry_id)
        else:
            self._adopt(entry_id, len(blob), entry.meta.pinned)
        return entry

    def _adopt(self, entry_id: str, size: int, pinned: bool) -> None:
        self._index[entry_id] = size
        self._used += size
        if pinned:
            self._pinned.add(entry_id)

    async def set(self, entry_id: str, entry: Entry) -> None:
        await self._ensure_loaded()
        blob = entry.to_bytes()
        if len(blob) > self.capacity_bytes:
            return
        await asyncio.to_thread(atomic_write, self._path(entry_id), blob)
        self._forget(entry_id)
        self._adopt(entry_id, len(blob), entry.meta.pinned)
        await self._evict()

    async def _evict(self) -> None:
        while self._used > self.capacity_bytes:
            victim = next((i for i in self._index if i not in self._pinned), None)
            if victim is None:
                return
            await self.delete(victim)
            self.evictions += 1

    def _forget(self, entry_id: str) -> int:
        size = self._index.pop(entry_id, 0)
        self._used -= size
        self._pinned.discard(entry_id)
        return size

    async def delete(self, entry_id: str) -> int:
        await self._ensure_loaded()
        size = self._forget(entry_id)
        path = self._path(entry_id)
        await asyncio.to_thread(path.unlink, True)
        return size

    async def touch(self, entry_id: str, meta: EntryMeta) -> None:
        entry = await self.get(entry_id)
        if entry is not None:
            await self.set(entry_id, Entry(entry.data, meta))

    async def scan(self) -> AsyncIterator[tuple[str, EntryMeta]]:
        await self._ensure_loaded()
        for entry_id in list(self._index):
            try:
                meta = await asyncio.to_thread(self._read_meta, entry_id)
            except (OSError, StorageError):
                continue
            yield entry_id, meta

    def _read_meta(self, entry_id: str) -> EntryMeta:
        with self._path(entry_id).open("rb") as handle:
            return read_header(handle.read(_HEADER_PROBE))

    async def stats(self) -> TierStats:
        await self._ensure_loaded()
        return TierStats(
            name=self.name,
            entries=len(self._index),
            bytes=self._used,
            capacity_bytes=self.capacity_bytes,
            evictions=self.evictions,
            errors=self.errors,
        )
