"""The disk tier's synchronous core: values in files, their index in SQLite, one byte budget.

`DiskStore` does blocking work only; `DiskTier` runs it in a small thread pool, off the event
loop, and the background maintainer (`maintenance.py`) calls it from its own thread.

Budgets. The byte count lives in the index and is updated in the same transaction as every
insert and delete, so every process sharing the directory enforces one budget: each write
evicts, in that transaction, entries past their grace period and then the least recently
used unpinned ones until the total fits. Pinned entries have their own budget (by default
half the tier, `VOICECACHE_PINNED_BYTES`): a pinned entry past it is stored unpinned, so it
can be evicted like any other; that is logged once and counted in `pinned_rejected`.

Recency. Writing SQLite on every hit would make reads cost a write transaction, so a hit
only notes the time in a dict (and only when the stored time is older than a second); the
notes are written in one batch by the next write or by the maintainer every few seconds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from voicecache.cache.tiers.disk import files
from voicecache.cache.tiers.disk.index import Budget, Change, Counters, DiskIndex
from voicecache.errors import StorageError
from voicecache.model import Entry, EntryMeta

log = logging.getLogger(__name__)

DiskPolicy = Literal["lru", "fifo"]  # fifo: least recently stored (hits write nothing)
PINNED_SHARE = 0.5  # the pinned budget when none is configured: half of the tier
_TOUCH_RESOLUTION = 1.0  # seconds: hits closer than this to the stored access time write nothing
_MAX_PENDING_TOUCHES = 4096


def pinned_budget(max_bytes: int, pinned_bytes: int | None) -> int:
    """The bytes pinned entries may hold in a tier of `max_bytes`."""
    if pinned_bytes is None:
        return int(max_bytes * PINNED_SHARE)
    return max(0, min(pinned_bytes, max_bytes))


def check_id(entry_id: str) -> None:
    """Ids name files in the legacy layout: refuse anything that could leave the directory."""
    if not entry_id or "/" in entry_id or "\0" in entry_id or entry_id.startswith("."):
        raise StorageError(f"invalid entry id {entry_id!r}")
    if len(entry_id) > 200:
        raise StorageError(f"invalid entry id {entry_id[:20]!r}…: too long")


class DiskStore:
    """One cache directory: `root/index.sqlite3` and value files under `root/ab/cd/`."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        pinned_bytes: int | None = None,
        policy: DiskPolicy = "lru",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if policy not in ("lru", "fifo"):
            raise ValueError(f"unknown disk eviction policy {policy!r} (lru, fifo)")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.pinned_capacity = pinned_budget(max_bytes, pinned_bytes)
        self.policy = policy
        self.clock = clock
        self.index = DiskIndex(self.root)
        self.migrated = False
        self._opened_pid: int | None = None
        self._open_lock = threading.Lock()
        self._touches: dict[str, float] = {}
        self._pinned_warned = False
        # Counters of this process, read by `stats()` and the metrics layer.
        self.evictions = 0
        self.errors = 0
        self.lost = 0  # index rows whose file had vanished
        self.pinned_rejected = 0

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the index: a few files, whatever the number of entries."""
        if self._opened_pid == os.getpid():
            return
        with self._open_lock:
            if self._opened_pid == os.getpid():
                return
            self.root.mkdir(parents=True, exist_ok=True)
            if self.index.create():
                # A new index over a directory that already holds the pre-index layout: the
                # maintainer adopts those files in the background. One listing of the root.
                legacy = any(
                    item.is_dir() and not item.name.startswith(".")
                    for item in os.scandir(self.root)
                )
                with self.index.write() as tx:
                    self.index.set_state(tx, "migrated", 0 if legacy else 1)
                    self.index.set_state(tx, "reconciled_at", time.time())
            self.refresh_migrated()
            self._opened_pid = os.getpid()

    def refresh_migrated(self) -> bool:
        self.migrated = bool(self.index.get_state("migrated", 0))
        return self.migrated

    def close(self) -> None:
        self.flush_touches()
        self.index.close()
        self._opened_pid = None

    def budget(self) -> Budget:
        return Budget(self.max_bytes, self.pinned_capacity, self.clock())

    # -- reads ---------------------------------------------------------------------------------

    def get(self, entry_id: str, verify: bool = True) -> Entry | None:
        row = self.index.lookup(entry_id)
        if row is None:
            return None if self.migrated else self._get_legacy(entry_id)
        try:
            blob = files.read_value(self.root, row.filename)
        except FileNotFoundError:
            # A concurrent rewrite moved the entry to a new file, or the file was deleted
            # behind the index's back.
            again = self.index.lookup(entry_id)
            if again is None or again.filename == row.filename:
                with self.index.write() as tx:
                    if self.index.forget(tx, entry_id, row.filename):
                        self.lost += 1
                return None
            row = again
            try:
                blob = files.read_value(self.root, row.filename)
            except FileNotFoundError:
                return None
        meta = row.meta
        try:
            if len(blob) != row.size:
                raise StorageError(f"size mismatch for {meta.key}")
            data = files.unwrap(blob, meta, verify=verify)
        except StorageError as exc:
            log.warning("disk tier: dropping corrupt entry %s: %s", entry_id, exc)
            self.errors += 1
            with self.index.write() as tx:
                self.index.forget(tx, entry_id, row.filename)
            files.remove(self.root, row.filename)
            return None
        if self.policy == "lru":
            now = self.clock()
            if now - row.last_access >= _TOUCH_RESOLUTION:
                self._touches[entry_id] = now
                if len(self._touches) >= _MAX_PENDING_TOUCHES:
                    self.flush_touches()
        return Entry(data, meta)

    def _get_legacy(self, entry_id: str) -> Entry | None:
        """Until the migration is done, an id the index lacks may still be a legacy file."""
        filename = files.legacy_filename(entry_id)
        try:
            blob = files.read_value(self.root, filename)
        except OSError:
            return None
        try:
            entry = Entry.from_bytes(blob)
        except StorageError:
            self.errors += 1
            files.remove(self.root, filename)
            return None
        self.adopt([(entry_id, filename, len(blob), entry.meta, self.clock())])
        return entry

    def locate(self, entry_id: str) -> Path | None:
        """The file holding `entry_id` (tests, tooling)."""
        row = self.index.lookup(entry_id)
        return None if row is None else self.root / row.filename

    def counters(self) -> Counters:
        return self.index.counters()

    def scan_batch(self, after: int, limit: int) -> list[tuple[int, str, EntryMeta]]:
        """Headers from the index, in batches; no entry file is opened."""
        return self.index.headers_after(after, limit)

    def find(self, conditions: dict[str, str]) -> list[str]:
        return self.index.find(conditions)

    # -- writes --------------------------------------------------------------------------------

    def set(self, entry_id: str, entry: Entry) -> None:
        blob = entry.to_bytes()
        if len(blob) > self.max_bytes:
            return  # could never fit: declined, like any admission refusal
        filename = files.new_filename()
        files.write_value(self.root, filename, blob)
        try:
            with self.index.write() as tx:
                self._record_touches(tx)
                budget = self.budget()
                change = self.index.put(tx, entry_id, filename, len(blob), entry.meta, budget)
        except BaseException:
            files.remove(self.root, filename)
            raise
        self._settle(change)

    def adopt(self, items: list[tuple[str, str, int, EntryMeta, float]]) -> int:
        """Index files already on disk: (id, filename, size, header, last access) each.

        An id the index already has keeps its row; the found file is then deleted. Returns
        how many were adopted."""
        adopted = 0
        total = Change()
        with self.index.write() as tx:
            for entry_id, filename, size, meta, last_access in items:
                change = self.index.put(
                    tx,
                    entry_id,
                    filename,
                    size,
                    meta,
                    self.budget(),
                    last_access=last_access,
                    replace=False,
                )
                adopted += filename not in change.obsolete
                total.obsolete += change.obsolete
                total.evicted += change.evicted
                total.pinned_refused += change.pinned_refused
        self._settle(total)
        return adopted

    def delete(self, entry_ids: list[str]) -> list[int]:
        """Delete in one transaction; bytes freed per id."""
        with self.index.write() as tx:
            self._record_touches(tx)
            sizes, obsolete = self.index.delete(tx, entry_ids)
        for filename in obsolete:
            files.remove(self.root, filename)
        if not self.migrated:
            # An old-layout file not adopted yet must go too, or the migration would bring
            # the deleted (purged) entry back.
            for number, entry_id in enumerate(entry_ids):
                sizes[number] += self._delete_legacy(entry_id)
        return sizes

    def delete_where(self, condition: str, params: list[Any], limit: int) -> list[int]:
        """Delete up to `limit` entries matching an SQL condition (see `query.py`)."""
        with self.index.write() as tx:
            sizes, obsolete = self.index.delete_where(tx, condition, params, limit)
        for filename in obsolete:
            files.remove(self.root, filename)
        return sizes

    def _delete_legacy(self, entry_id: str) -> int:
        path = self.root / files.legacy_filename(entry_id)
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:
            return 0
        return size

    def touch(self, entry_id: str, meta: EntryMeta) -> None:
        """Replace the header: in the index only, unless the audio itself differs."""
        with self.index.write() as tx:
            change = self.index.retouch(tx, entry_id, meta, self.budget())
        if change is not None:
            self._settle(change)
            return
        entry = self.get(entry_id)
        if entry is not None:
            self.set(entry_id, Entry(entry.data, meta))

    def forget_lost(self, entry_id: str, filename: str) -> bool:
        with self.index.write() as tx:
            forgotten = self.index.forget(tx, entry_id, filename)
        self.lost += forgotten
        return forgotten

    def flush_touches(self) -> None:
        """Write the last-access times noted by hits since the last flush."""
        if not self._touches or self._opened_pid != os.getpid():
            return
        with self.index.write() as tx:
            self._record_touches(tx)

    def _record_touches(self, tx: sqlite3.Connection) -> None:
        if self._touches:
            # Swap first: hits in other threads go on noting into the fresh dict.
            touches, self._touches = self._touches, {}
            self.index.record_access(tx, touches)

    def _settle(self, change: Change) -> None:
        """After a commit: unlink replaced and evicted files, count what happened."""
        for filename in change.obsolete:
            files.remove(self.root, filename)
        self.evictions += change.evicted
        if change.pinned_refused:
            self.pinned_rejected += change.pinned_refused
            if not self._pinned_warned:
                self._pinned_warned = True
                log.warning(
                    "disk tier %s: pinned entries exceed their budget of %d bytes "
                    "(VOICECACHE_PINNED_BYTES); storing the excess unpinned, so it can be "
                    "evicted",
                    self.root,
                    self.pinned_capacity,
                )
