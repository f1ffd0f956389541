"""Where the disk tier's values live on disk, and how they are written and read.

Each value is one file holding `Entry.to_bytes()` (magic, header, audio), so a file describes
itself: the migration and the reconciler can adopt a file the index does not know. Files get
random names fanned out over two levels of hex folders (`ab/cd/<28 hex>.val`, as in
python-diskcache): a rewrite of an entry goes to a new file and the index row is switched to
it in one transaction, so the row and the file it names always agree, whatever order
concurrent writers from several processes commit in.

Before the index existed, a file was named by its entry id (`ab/cd/<id>`); those "legacy"
files are adopted by the migration under their existing names.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

from voicecache.errors import StorageError
from voicecache.fileio import atomic_write
from voicecache.model import MAGIC, EntryMeta, checksum, read_header

VALUE_SUFFIX = ".val"
TEMP_PREFIX = ".tmp-"  # what `fileio.atomic_write` names its temporary files
_LENGTH = struct.Struct(">I")
_PREFIX = len(MAGIC) + _LENGTH.size
_MAX_HEADER = 1 << 20  # a header is at most a few KiB (text ≤ 4000 chars); more is corrupt


def new_filename() -> str:
    """A fresh relative file name, `ab/cd/<28 hex>.val`."""
    token = os.urandom(16).hex()
    return f"{token[:2]}/{token[2:4]}/{token[4:]}{VALUE_SUFFIX}"


def legacy_filename(entry_id: str) -> str:
    """Where the pre-index layout kept `entry_id` (relative to the tier's root)."""
    return str(Path(entry_id[:2]) / entry_id[2:4] / entry_id)


def is_value_name(name: str) -> bool:
    """Whether a file name is one `new_filename` makes (not a legacy or temporary file)."""
    return name.endswith(VALUE_SUFFIX) and not name.startswith(".")


def write_value(root: Path, filename: str, blob: bytes) -> None:
    """Write a value file atomically (readers never see half a file)."""
    atomic_write(root / filename, blob)


def read_value(root: Path, filename: str) -> bytes:
    """The whole file; raises FileNotFoundError when it is gone."""
    with open(root / filename, "rb") as handle:
        return handle.read()


def unwrap(blob: bytes, meta: EntryMeta, *, verify: bool = True) -> bytes:
    """The audio in a value file, checked against the header the index holds.

    Checks the magic, the lengths and the checksum, so a truncated, corrupt or swapped file
    raises `StorageError` and is never served. `verify=False` skips the checksum (`read`)."""
    if not blob.startswith(MAGIC) or len(blob) < _PREFIX:
        raise StorageError(f"not a voicecache entry: {meta.key}")
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
    data = blob[_PREFIX + length :]
    if len(data) != meta.size or (verify and checksum(data) != meta.checksum):
        raise StorageError(f"checksum mismatch for {meta.key}")
    return data


def read_file_header(path: Path) -> tuple[EntryMeta, os.stat_result]:
    """The header of a value file, reading only the header's bytes (migration, strays)."""
    with open(path, "rb") as handle:
        prefix = handle.read(_PREFIX)
        if len(prefix) < _PREFIX or not prefix.startswith(MAGIC):
            raise StorageError(f"not a voicecache entry: {path.name}")
        (length,) = _LENGTH.unpack_from(prefix, len(MAGIC))
        if length > _MAX_HEADER:
            raise StorageError(f"corrupt entry header: {path.name}")
        meta = read_header(prefix + handle.read(length))
        stat = os.fstat(handle.fileno())
    if stat.st_size != _PREFIX + length + meta.size:
        raise StorageError(f"truncated entry: {path.name}")
    return meta, stat


def remove(root: Path, filename: str) -> None:
    """Delete a value file; a file already gone (another process got there first) is fine."""
    with contextlib.suppress(OSError):
        os.unlink(root / filename)
