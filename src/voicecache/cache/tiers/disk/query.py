"""Purge and sweep scopes as SQL over the disk tier's index.

A purge (`invalidation.purge.PurgeFilter`) or the sweeper's scope (`invalidation.sweeper.
Unreachable`) decides per entry with `matches(entry_id, meta)`. Evaluating that in Python
means reading every header; the index holds the fields those scopes test, so the same
condition becomes one SQL `WHERE` clause and SQLite finds the rows (by index for voice, tag
and expiry). The scopes are recognised by shape (`tiers/scopes.py`, shared with the Redis
index) so that this module does not import the invalidation package, which imports the tiers.

`where(scope)` returns None for a scope it does not know: the caller then scans headers.
"""

from __future__ import annotations

from typing import Any

from voicecache.cache.tiers.scopes import FilterScope, UnreachableScope


def where(scope: object) -> tuple[str, list[Any]] | None:
    """An SQL condition on `entries` equivalent to `scope.matches`, or None."""
    if isinstance(scope, FilterScope):
        return _filter(scope)
    if isinstance(scope, UnreachableScope):
        return _unreachable(scope)
    return None


def _filter(scope: FilterScope) -> tuple[str, list[Any]] | None:
    if scope.all:
        return "1", []
    if scope.key is not None:
        return None  # by key the caller deletes the few ids directly
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("voice", "engine", "model_version"):
        value = getattr(scope, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if scope.tag is not None:
        clauses.append("rowid IN (SELECT entry FROM tags WHERE tag = ?)")
        params.append(scope.tag)
    if scope.older_than is not None:
        clauses.append("created <= ?")
        params.append(scope.now - scope.older_than)
    if scope.expired:  # pinned entries (no expiry) never expire
        clauses.append("expires_at IS NOT NULL AND expires_at <= ?")
        params.append(scope.now)
    if not clauses:
        return None
    return " AND ".join(clauses), params


def _unreachable(scope: UnreachableScope) -> tuple[str, list[Any]]:
    clauses = ["(stale_until IS NOT NULL AND stale_until <= ?)"]
    params: list[Any] = [scope.now]
    for engine, version in sorted(scope.model_versions.items()):
        clauses.append("(engine = ? AND model_version != ?)")
        params += [engine, version]
    return " OR ".join(clauses), params
