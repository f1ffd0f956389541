"""What a purge covers: a `PurgeFilter` given by an operator, or the sweeper's `Unreachable`.

Both are `PurgeScope`s (`tiers/tiered.py`): a `matches(entry_id, meta)` that the purge applies
to every entry it looks at, and that the tiered cache's fencing applies to every read and write
racing the purge. `PurgeFilter` also says which of its conditions a tier's secondary index can
answer without a scan (`index_lookups`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voicecache.codecs import FORMATS
from voicecache.errors import InvalidFilter
from voicecache.model import TAG_PATTERN, VOICE_PATTERN, EntryMeta
from voicecache.units import parse_duration

_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class PurgeFilter:
    """Which entries a purge removes: every given condition must hold (AND).

    `older_than` (seconds) and `expired` are judged at `now`, the moment the purge was asked
    for. `expired` means past its TTL (`expires_at`), whether or not still within grace;
    pinned entries never expire. `all` matches everything and cannot be combined."""

    key: str | None = None
    voice: str | None = None
    tag: str | None = None
    engine: str | None = None
    model_version: str | None = None
    older_than: float | None = None
    expired: bool = False
    all: bool = False
    now: float = 0.0

    @classmethod
    def create(
        cls,
        *,
        now: float,
        key: str | None = None,
        voice: str | None = None,
        tag: str | None = None,
        engine: str | None = None,
        model_version: str | None = None,
        older_than: str | float | None = None,
        expired: bool = False,
        all_entries: bool = False,
    ) -> PurgeFilter:
        """Validate user input; raises `InvalidFilter` with a readable detail."""
        key = _clean(key)
        if key is not None:
            digest, _, fmt = key.partition(".")
            if not _KEY.match(digest) or (fmt and fmt not in FORMATS):
                raise InvalidFilter(
                    "key must be a 64-character hex cache key, optionally with a format "
                    "suffix such as .wav"
                )
        voice, tag = _clean(voice), _clean(tag)
        if voice is not None and not VOICE_PATTERN.match(voice):
            raise InvalidFilter("voice must be 1-64 letters, digits, '_', '.', '+' or '-'")
        if tag is not None and not TAG_PATTERN.match(tag):
            raise InvalidFilter("tag must be 1-64 letters, digits, '_', '.', ':' or '-'")
        age: float | None = None
        if older_than is not None and str(older_than).strip():
            try:
                age = parse_duration(older_than)
            except ValueError as exc:
                raise InvalidFilter(f"older_than: {exc}") from exc
        flt = cls(
            key=key,
            voice=voice,
            tag=tag,
            engine=_clean(engine),
            model_version=_clean(model_version),
            older_than=age,
            expired=bool(expired),
            all=bool(all_entries),
            now=now,
        )
        if all_entries and flt.conditions():
            raise InvalidFilter("all=true cannot be combined with other filters")
        if not all_entries and not flt.conditions():
            raise InvalidFilter(
                "give at least one filter (key, voice, tag, engine, model_version, older_than, "
                "expired) or ask for all (all=true, --all); a purge without a filter is refused"
            )
        return flt

    def conditions(self) -> dict[str, Any]:
        """The given conditions, by name (for reports)."""
        given: dict[str, Any] = {
            "key": self.key,
            "voice": self.voice,
            "tag": self.tag,
            "engine": self.engine,
            "model_version": self.model_version,
            "older_than": self.older_than,
        }
        found = {name: value for name, value in given.items() if value is not None}
        if self.expired:
            found["expired"] = True
        return found

    def matches(self, entry_id: str, meta: EntryMeta) -> bool:
        """Whether the entry stored under `entry_id` with header `meta` is covered."""
        if self.all:
            return True
        if self.key is not None and entry_id != self.key and entry_id.split(".")[0] != self.key:
            return False
        if self.voice is not None and meta.voice != self.voice:
            return False
        if self.tag is not None and self.tag not in meta.tags:
            return False
        if self.engine is not None and meta.engine != self.engine:
            return False
        if self.model_version is not None and meta.model_version != self.model_version:
            return False
        if self.older_than is not None and meta.created > self.now - self.older_than:
            return False
        return not self.expired or (meta.expires_at is not None and meta.expires_at <= self.now)

    def index_lookups(self) -> dict[str, str] | None:
        """The conditions a tier's secondary index answers, when those are all there are."""
        pairs = (("voice", self.voice), ("tag", self.tag))
        indexed = {name: value for name, value in pairs if value is not None}
        if not indexed or set(self.conditions()) - set(indexed):
            return None
        return indexed


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The sweeper's scope: old model versions and entries past their grace period."""

    model_versions: Mapping[str, str]
    now: float

    def matches(self, entry_id: str, meta: EntryMeta) -> bool:
        current = self.model_versions.get(meta.engine)
        if current is not None and meta.model_version != current:
            return True
        return meta.stale_until is not None and meta.stale_until <= self.now


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None
