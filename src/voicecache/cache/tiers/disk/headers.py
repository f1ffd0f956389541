"""Entry headers as the disk tier's index stores them.

The index keeps the header fields that lookups, eviction, purges and sweeps search as columns
(`META_COLUMNS`) and the rest as compact JSON in its `header` column: fields at their
default are left out, and so are the key and format when the id is `<key>.<format>`.
`meta_from_row` puts an `EntryMeta` back together from both.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import Any

from voicecache.model import EntryMeta

# Header fields the index keeps as columns (searched, or used by eviction and sweeps); the
# `header` column holds the rest.
META_COLUMNS = (
    "created",
    "expires_at",
    "stale_until",
    "voice",
    "engine",
    "model_version",
    "tenant",
)
_IN_COLUMNS = frozenset(META_COLUMNS)


_REQUIRED = {
    f.name for f in fields(EntryMeta) if f.default is MISSING and f.default_factory is MISSING
}
_DEFAULTS = {
    f.name: list(f.default) if isinstance(f.default, tuple) else f.default
    for f in fields(EntryMeta)
    if f.name not in _REQUIRED
}


_FIELDS = tuple(f.name for f in fields(EntryMeta))


def _compact(meta: EntryMeta, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    kept = {}
    # Not `meta.to_json()`: `dataclasses.asdict` deep-copies, ~50x slower than this loop.
    for name in _FIELDS:
        if name in skip:
            continue
        value = getattr(meta, name)
        if isinstance(value, tuple):
            value = list(value)
        if name in _REQUIRED or value != _DEFAULTS[name]:
            kept[name] = value
    return kept


def _dump(data: dict[str, Any]) -> bytes:
    # surrogatepass: a lone surrogate in text must not make the index refuse the entry.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def encode_header(meta: EntryMeta) -> bytes:
    """A whole header as compact JSON (fields at their default left out): `read_header` and
    `EntryMeta.from_json` read it back."""
    return _dump(_compact(meta))


def rest_of(meta: EntryMeta, entry_id: str) -> bytes:
    """What the index stores of a header besides its columns: not the fields it keeps in
    columns, and not the key and format when the id is `<key>.<format>` (as every id the
    gateway makes). About half of a whole header."""
    skip = _IN_COLUMNS
    if entry_id == f"{meta.key}.{meta.format}":
        skip = skip | {"key", "format"}
    return _dump(_compact(meta, skip))


def meta_from_row(entry_id: str, rest: bytes, columns: tuple[Any, ...]) -> EntryMeta:
    data = json.loads(rest)
    if "key" not in data:
        data["key"], _, data["format"] = entry_id.rpartition(".")
    data.update(zip(META_COLUMNS, columns, strict=True))
    return EntryMeta.from_json(data)
