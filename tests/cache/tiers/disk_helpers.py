"""Helpers for the disk tier tests: the pre-index file layout, real bytes on disk, and an
audit of the files a piece of code opens."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.cache.tiers.test_contract import make_entry
from voicecache.cache.tiers import Entry, EntryMeta
from voicecache.cache.tiers.disk.index import DB_NAME, DiskIndex


def write_legacy(root: Path, entry_id: str, entry: Entry) -> Path:
    """Store `entry` the way the disk tier did before its index: one file named by its id."""
    path = root / entry_id[:2] / entry_id[2:4] / entry_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(entry.to_bytes())
    return path


def entry_id(number: int, fmt: str = "flac") -> str:
    return f"{number:064x}"[::-1] + f".{fmt}"  # reversed: spread over the fan-out folders


def entry_for(
    number: int, size: int, *, expires_at: float | None = 2e9, **fields: Any
) -> tuple[str, Entry]:
    """Entry number `number` with `size` bytes of audio; header fields overridable."""
    eid = entry_id(number)
    entry = make_entry(eid.split(".")[0], bytes([number % 251]) * size, expires_at=expires_at)
    return eid, Entry(entry.data, replace(entry.meta, **fields))


def value_files(root: Path) -> dict[Path, int]:
    """Every file under `root` except the index: path -> size."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if folder == str(root) and name.startswith(DB_NAME):
                continue
            path = Path(folder) / name
            found[path] = path.stat().st_size
    return found


def stored_files(root: Path) -> dict[str, Path]:
    """Entry id -> file, for the entries a disk tier's index lists whose file exists (read
    straight from the index: for tests of other layers that check what reached the disk)."""
    index = root / DB_NAME
    if not index.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id, filename FROM entries").fetchall()
    return {eid: root / name for eid, name in rows if (root / name).exists()}


def stored_header(root: Path, entry_id: str) -> EntryMeta | None:
    """The header the index holds for `entry_id` (what scans, purges and hits see)."""
    index = DiskIndex(root)
    try:
        row = index.lookup(entry_id)
    finally:
        index.close()
    return None if row is None else row.meta


def real_bytes(root: Path) -> int:
    return sum(value_files(root).values())


class _Audit:
    """Records file opens and directory listings under one root (an `open` audit hook)."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.events: list[tuple[str, str]] = []

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        root = self.root
        if root is None or event not in ("open", "os.scandir", "os.listdir"):
            return
        path = args[0] if args else None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, str) and os.path.abspath(path).startswith(root):
            self.events.append((event, path))


_AUDIT = _Audit()
sys.addaudithook(_AUDIT.hook)  # hooks cannot be removed: one for the whole session


@contextlib.contextmanager
def audit_opens(root: Path) -> Iterator[list[tuple[str, str]]]:
    """Collect (event, path) for `open`, `os.scandir` and `os.listdir` under `root`."""
    _AUDIT.root, _AUDIT.events = str(root.resolve()), []
    try:
        yield _AUDIT.events
    finally:
        _AUDIT.root = None
