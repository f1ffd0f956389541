"""Purge and sweep scopes as tiers see them: by shape, so tiers can answer them from an index.

A purge (`invalidation.filter.PurgeFilter`) or the sweeper's scope (`invalidation.filter.
Unreachable`) decides per entry with `matches(entry_id, meta)`. A tier with an index (the SQLite
index on disk, the Redis index of the Redis and S3 tiers) answers the same question without
reading every entry: it needs to know which fields the scope tests. The invalidation package
imports the tiers, so the tiers recognise its scopes by their attributes (the `Protocol`s
below) rather than by importing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from voicecache.model import EntryMeta


@runtime_checkable
class FilterScope(Protocol):
    """The fields of `PurgeFilter`: every given condition must hold."""

    key: str | None
    voice: str | None
    tag: str | None
    engine: str | None
    model_version: str | None
    older_than: float | None
    expired: bool
    all: bool
    now: float

    def matches(self, entry_id: str, meta: EntryMeta) -> bool: ...


@runtime_checkable
class UnreachableScope(Protocol):
    """The fields of the sweeper's `Unreachable`: an old model version of a configured engine,
    or past the grace period (any one suffices)."""

    model_versions: Mapping[str, str]
    now: float

    def matches(self, entry_id: str, meta: EntryMeta) -> bool: ...
