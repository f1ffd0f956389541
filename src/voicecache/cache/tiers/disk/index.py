"""The disk tier's index: one SQLite database in WAL mode beside the files, shared by every
process that opens the directory (server workers, `voicecache warm`, `voicecache purge`).

One row per entry holds what lookups, eviction, purges and sweeps need (file name, size,
expiry, pin, last access, voice, engine, model version, tenant, the header) and a `tags`
table answers purges by tag. A single `counters` row holds the entry count and the bytes
(all, and pinned): triggers update it in the same transaction as every insert, update and
delete, so all processes share one exact byte budget and `stats()` is one read.

Every write is a short `BEGIN IMMEDIATE` transaction (SQLite serializes writers across
processes; a thread lock serializes them within one, so a process never spins in SQLite's
busy handler against itself). Reads need no transaction: WAL readers never wait for writers.
Connections are per thread; the tier runs all of this off the event loop.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecache.cache.tiers.disk.headers import META_COLUMNS, meta_from_row, rest_of
from voicecache.model import EntryMeta

DB_NAME = "index.sqlite3"
SCHEMA_VERSION = 1
_EVICT_BATCH = 64

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        id TEXT NOT NULL UNIQUE,
        filename TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        stored REAL NOT NULL,
        last_access REAL NOT NULL,
        pinned INTEGER NOT NULL,
        expires_at REAL,
        stale_until REAL,
        created REAL NOT NULL,
        voice TEXT NOT NULL,
        engine TEXT NOT NULL,
        model_version TEXT NOT NULL,
        tenant TEXT,
        header BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tags (
        tag TEXT NOT NULL, entry INTEGER NOT NULL, PRIMARY KEY (tag, entry)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS tags_entry ON tags (entry)",
    "CREATE INDEX IF NOT EXISTS entries_voice ON entries (voice)",
    # Eviction candidates in least-recently-used order; pinned entries are never candidates.
    "CREATE INDEX IF NOT EXISTS entries_lru ON entries (last_access) WHERE pinned = 0",
    "CREATE INDEX IF NOT EXISTS entries_stale ON entries (stale_until)"
    " WHERE stale_until IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS counters (
        one INTEGER PRIMARY KEY CHECK (one = 0),
        entries INTEGER NOT NULL, bytes INTEGER NOT NULL,
        pinned_entries INTEGER NOT NULL, pinned_bytes INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO counters VALUES (0, 0, 0, 0, 0)",
    "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """CREATE TRIGGER IF NOT EXISTS entries_inserted AFTER INSERT ON entries BEGIN
        UPDATE counters SET entries = entries + 1, bytes = bytes + NEW.size,
            pinned_entries = pinned_entries + NEW.pinned,
            pinned_bytes = pinned_bytes + NEW.pinned * NEW.size;
    END""",
    """CREATE TRIGGER IF NOT EXISTS entries_deleted AFTER DELETE ON entries BEGIN
        UPDATE counters SET entries = entries - 1, bytes = bytes - OLD.size,
            pinned_entries = pinned_entries - OLD.pinned,
            pinned_bytes = pinned_bytes - OLD.pinned * OLD.size;
        DELETE FROM tags WHERE entry = OLD.rowid;
    END""",
    """CREATE TRIGGER IF NOT EXISTS entries_resized AFTER UPDATE OF size, pinned ON entries BEGIN
        UPDATE counters SET bytes = bytes + NEW.size - OLD.size,
            pinned_entries = pinned_entries + NEW.pinned - OLD.pinned,
            pinned_bytes = pinned_bytes + NEW.pinned * NEW.size - OLD.pinned * OLD.size;
    END""",
)

_META_SELECT = ", ".join(META_COLUMNS)
_COLUMNS = f"id, filename, size, stored, last_access, pinned, header, {_META_SELECT}"


# -- rows and results --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """What a lookup returns."""

    rowid: int
    filename: str
    size: int
    last_access: float
    meta: EntryMeta


@dataclass(frozen=True, slots=True)
class Counters:
    entries: int
    bytes: int
    pinned_entries: int
    pinned_bytes: int


@dataclass(slots=True)
class Change:
    """What a write did: files to unlink once committed, entries evicted, pins refused."""

    obsolete: list[str] = field(default_factory=list)
    evicted: int = 0
    pinned_refused: int = 0
    freed: int = 0


@dataclass(frozen=True, slots=True)
class Budget:
    """The byte budgets writes enforce, and the policy's clock reading."""

    max_bytes: int
    pinned_bytes: int
    now: float


# -- the index ---------------------------------------------------------------------------------


class DiskIndex:
    """The SQLite index of one cache directory."""

    def __init__(self, root: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = root / DB_NAME
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards `_connections`
        self._write_lock = threading.Lock()  # one writer per process at a time

    # -- connections and transactions ---------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL stays intact
        conn.execute("PRAGMA journal_size_limit = 8388608")
        conn.execute("PRAGMA temp_store = MEMORY")
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction."""
        conn = self.connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def create(self) -> bool:
        """Create the schema if needed; returns whether the database was new."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connection()
        # WAL is a property of the database file: set once, every process then uses it.
        conn.execute("PRAGMA journal_mode = WAL")
        with self.write() as tx:
            tx.execute(
                "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value) WITHOUT ROWID"
            )
            found = tx.execute("SELECT value FROM state WHERE name = 'schema'").fetchone()
            if found is not None:
                return False
            for statement in _SCHEMA:
                tx.execute(statement)
            tx.execute("INSERT INTO state VALUES ('schema', ?)", (SCHEMA_VERSION,))
            return True

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    # -- state ---------------------------------------------------------------------------------

    def get_state(self, name: str, default: Any = None) -> Any:
        row = self.connection().execute("SELECT value FROM state WHERE name = ?", (name,))
        found = row.fetchone()
        return default if found is None else found[0]

    @staticmethod
    def set_state(tx: sqlite3.Connection, name: str, value: Any) -> None:
        tx.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (name, value))

    def take_lease(self, name: str, holder: str, now: float, hold: float) -> bool:
        """Whether `holder` may do the shared background job `name` (one process per host)."""
        with self.write() as tx:
            found = tx.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
            if found is not None:
                current, _, until = str(found[0]).partition(" ")
                if current != holder and float(until or 0) > now:
                    return False
            self.set_state(tx, name, f"{holder} {now + hold}")
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as tx:
            tx.execute("DELETE FROM state WHERE name = ? AND value LIKE ?", (name, f"{holder} %"))

    # -- reads ---------------------------------------------------------------------------------

    def lookup(self, entry_id: str) -> Row | None:
        found = (
            self.connection()
            .execute(
                "SELECT rowid, filename, size, last_access, header,"
                f" {_META_SELECT} FROM entries WHERE id = ?",
                (entry_id,),
            )
            .fetchone()
        )
        if found is None:
            return None
        rowid, filename, size, last_access = found[:4]
        return Row(rowid, filename, size, last_access, meta_from_row(entry_id, found[4], found[5:]))

    def has_filename(self, filename: str) -> bool:
        query = "SELECT 1 FROM entries WHERE filename = ?"
        return self.connection().execute(query, (filename,)).fetchone() is not None

    def counters(self) -> Counters:
        query = "SELECT entries, bytes, pinned_entries, pinned_bytes FROM counters"
        return Counters(*self.connection().execute(query).fetchone())

    def headers_after(self, rowid: int, limit: int) -> list[tuple[int, str, EntryMeta]]:
        """(rowid, id, header) in rowid order, for scans in batches."""
        rows = self.connection().execute(
            f"SELECT rowid, id, header, {_META_SELECT} FROM entries WHERE rowid > ?"
            " ORDER BY rowid LIMIT ?",
            (rowid, limit),
        )
        return [(row[0], row[1], meta_from_row(row[1], row[2], row[3:])) for row in rows]

    def find(self, conditions: dict[str, str]) -> list[str]:
        """Ids of entries matching every condition (voice, tag, engine, model_version)."""
        sql, params = "SELECT id FROM entries", []
        clauses = []
        for name, value in conditions.items():
            if name == "tag":
                clauses.append("rowid IN (SELECT entry FROM tags WHERE tag = ?)")
            elif name in ("voice", "engine", "model_version"):
                clauses.append(f"{name} = ?")
            else:
                raise ValueError(f"the disk index cannot search by {name!r}")
            params.append(value)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [row[0] for row in self.connection().execute(sql, params)]

    def rows_in_dir(self, directory: str) -> list[tuple[str, str]]:
        """(id, filename) of the rows whose file is in `directory` (`ab/cd`)."""
        # Every name starting "ab/cd/" sorts in ["ab/cd/", "ab/cd0"): "/" comes right before "0".
        query = "SELECT id, filename FROM entries WHERE filename >= ? AND filename < ?"
        return self.connection().execute(query, (directory + "/", directory + "0")).fetchall()

    # -- writes (call inside `write()`) --------------------------------------------------------

    def put(
        self,
        tx: sqlite3.Connection,
        entry_id: str,
        filename: str,
        size: int,
        meta: EntryMeta,
        budget: Budget,
        *,
        last_access: float | None = None,
        replace: bool = True,
    ) -> Change:
        """Index a file written for `entry_id`, then evict down to the budget.

        A pinned entry past the pinned budget is stored unpinned (evictable) and counted in
        `Change.pinned_refused`. With `replace=False` (adopting a found file) an existing row
        wins and the found file is reported obsolete."""
        change = Change()
        old = tx.execute("SELECT rowid, filename FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if old is not None:
            if not replace:
                if old[1] != filename:
                    change.obsolete.append(filename)
                return change
            tx.execute("DELETE FROM entries WHERE rowid = ?", (old[0],))
            if old[1] != filename:
                change.obsolete.append(old[1])
        pinned = meta.pinned
        if pinned:
            pinned_now = tx.execute("SELECT pinned_bytes FROM counters").fetchone()[0]
            if pinned_now + size > budget.pinned_bytes:
                pinned = False
                change.pinned_refused = 1
        cursor = tx.execute(
            f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry_id,
                filename,
                size,
                budget.now,
                budget.now if last_access is None else last_access,
                int(pinned),
                rest_of(meta, entry_id),
                *(getattr(meta, name) for name in META_COLUMNS),
            ),
        )
        if meta.tags:
            rowid = cursor.lastrowid
            tx.executemany(
                "INSERT OR IGNORE INTO tags VALUES (?, ?)", [(tag, rowid) for tag in meta.tags]
            )
        self.evict(tx, budget, change)
        return change

    def retouch(
        self, tx: sqlite3.Connection, entry_id: str, meta: EntryMeta, budget: Budget
    ) -> Change | None:
        """Replace an entry's header in the index only (sliding expiry): no file is rewritten.

        None when the entry is absent or its audio differs (the caller rewrites instead)."""
        found = tx.execute(
            f"SELECT rowid, pinned, size, header, {_META_SELECT} FROM entries WHERE id = ?",
            (entry_id,),
        ).fetchone()
        if found is None:
            return None
        rowid, was_pinned, size = found[:3]
        stored = meta_from_row(entry_id, found[3], found[4:])
        if stored.checksum != meta.checksum or stored.size != meta.size:
            return None
        change = Change()
        pinned = meta.pinned
        if pinned and not was_pinned:
            pinned_now = tx.execute("SELECT pinned_bytes FROM counters").fetchone()[0]
            if pinned_now + size > budget.pinned_bytes:
                pinned, change.pinned_refused = False, 1
        assignments = ", ".join(f"{name} = ?" for name in META_COLUMNS)
        tx.execute(
            f"UPDATE entries SET pinned = ?, header = ?, {assignments} WHERE rowid = ?",
            (
                int(pinned),
                rest_of(meta, entry_id),
                *(getattr(meta, name) for name in META_COLUMNS),
                rowid,
            ),
        )
        if set(meta.tags) != set(stored.tags):
            tx.execute("DELETE FROM tags WHERE entry = ?", (rowid,))
            tx.executemany(
                "INSERT OR IGNORE INTO tags VALUES (?, ?)", [(tag, rowid) for tag in meta.tags]
            )
        self.evict(tx, budget, change)
        return change

    def evict(self, tx: sqlite3.Connection, budget: Budget, change: Change) -> None:
        """Delete rows until the bytes fit `max_bytes`: entries past their grace period first
        (dead anyway), then unpinned ones, least recently used first."""
        queries = (
            "SELECT rowid, filename, size FROM entries WHERE stale_until <= ?"
            " ORDER BY stale_until LIMIT ?",
            "SELECT rowid, filename, size FROM entries WHERE pinned = 0"
            " ORDER BY last_access LIMIT ?",
        )
        for number, query in enumerate(queries):
            while True:
                excess = tx.execute("SELECT bytes FROM counters").fetchone()[0] - budget.max_bytes
                if excess <= 0:
                    return
                params = (budget.now, _EVICT_BATCH) if number == 0 else (_EVICT_BATCH,)
                candidates = tx.execute(query, params).fetchall()
                if not candidates:
                    break
                chosen = []
                for rowid, filename, size in candidates:
                    chosen.append(rowid)
                    change.obsolete.append(filename)
                    change.evicted += 1
                    change.freed += size
                    excess -= size
                    if excess <= 0:
                        break
                marks = ",".join("?" * len(chosen))
                tx.execute(f"DELETE FROM entries WHERE rowid IN ({marks})", chosen)

    @staticmethod
    def delete(tx: sqlite3.Connection, entry_ids: Iterable[str]) -> tuple[list[int], list[str]]:
        """Delete rows by id: the bytes freed per id (0 when absent), and the files to unlink
        once the transaction is committed."""
        sizes: list[int] = []
        files: list[str] = []
        for entry_id in entry_ids:
            found = tx.execute(
                "DELETE FROM entries WHERE id = ? RETURNING filename, size", (entry_id,)
            ).fetchone()
            sizes.append(0 if found is None else found[1])
            if found is not None:
                files.append(found[0])
        return sizes, files

    @staticmethod
    def delete_where(
        tx: sqlite3.Connection, condition: str, params: list[Any], limit: int
    ) -> tuple[list[int], list[str]]:
        """Delete up to `limit` rows matching an SQL condition: their sizes and files."""
        rows = tx.execute(
            f"DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries WHERE {condition}"
            " LIMIT ?) RETURNING size, filename",
            [*params, limit],
        ).fetchall()
        return [size for size, _ in rows], [filename for _, filename in rows]

    @staticmethod
    def forget(tx: sqlite3.Connection, entry_id: str, filename: str) -> bool:
        """Delete the row of `entry_id` only if it still names `filename` (a lost file)."""
        cursor = tx.execute(
            "DELETE FROM entries WHERE id = ? AND filename = ?", (entry_id, filename)
        )
        return cursor.rowcount > 0

    @staticmethod
    def record_access(tx: sqlite3.Connection, touches: dict[str, float]) -> None:
        """Write batched last-access times (never moving one back)."""
        tx.executemany(
            "UPDATE entries SET last_access = ? WHERE id = ? AND last_access < ?",
            [(when, entry_id, when) for entry_id, when in touches.items()],
        )
