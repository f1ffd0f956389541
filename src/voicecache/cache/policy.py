"""Cache policy: how long audio lives, and what a request's `Cache-Control` asks for.

`Policy.resolve` turns a request into an `EntryPolicy` (TTL, pinned, sliding). The gateway
asks it once per store and once per hit (`hit`, for sliding expiry and popularity); it never
decides anything about lifetimes itself.

Lifetimes, in order of precedence:

- A rule (first match wins) or `default_ttl` gives the TTL; `pinned` means no expiry at all.
- `Cache-Control: max-age=N` can only shorten that TTL (and unpins).
- `sliding`: each hit moves expiry to `now + ttl`, never past `created + max_ttl`.
- Popularity: an entry hit `popularity_hits` times in this process lives `popularity_factor`
  times its TTL (counted from its creation, or from the hit when sliding), still capped by
  `max_ttl`. The extension is applied once, by one header touch; hits are counted in a
  bounded in-process table, so a hit costs a dict update and no I/O.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, field_validator

from voicecache.bounded import BoundedDict, sizeof_str
from voicecache.model import EntryMeta, SpeechRequest
from voicecache.units import parse_duration


class TtlRule(BaseModel):
    """One TTL rule; the first rule whose every given condition matches wins."""

    voice: str | None = None
    emotion: str | None = None
    engine: str | None = None
    tag: str | None = None
    tags: list[str] | None = None
    text_regex: str | None = None
    personalized: bool | None = None
    ttl: float | None = None
    pinned: bool = False
    sliding: bool = False
    max_ttl: float | None = None

    @field_validator("ttl", "max_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("text_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"text_regex {value!r} is not a valid regex: {exc}") from exc
        return value


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The parts of a request's `Cache-Control` header voicecache honours.

    `no-cache`: skip the lookup, synthesize afresh and store. `no-store`: do not store the
    result. `max-age=N`: store with a TTL of at most N seconds (it can only shorten)."""

    no_cache: bool = False
    no_store: bool = False
    max_age: float | None = None

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return cls()
        names: set[str] = set()
        max_age: float | None = None
        for directive in header.lower().split(","):
            name, _, value = directive.partition("=")
            name = name.strip()
            names.add(name)
            if name == "max-age":
                try:
                    seconds = float(value.strip().strip('"'))
                except ValueError:
                    continue  # a malformed max-age is ignored, as HTTP caches do
                if seconds == seconds:  # not NaN
                    # Several max-age directives: the shortest wins (it can only shorten).
                    seconds = max(0.0, seconds)
                    max_age = seconds if max_age is None else min(max_age, seconds)
        return cls("no-cache" in names, "no-store" in names, max_age)


@dataclass(frozen=True, slots=True)
class EntryPolicy:
    """The lifetime decided for one entry."""

    ttl: float | None  # None when pinned
    pinned: bool = False
    sliding: bool = False
    max_ttl: float | None = None


class Policy:
    """TTL rules (first match wins), pinning, sliding and grace."""

    def __init__(
        self,
        *,
        default_ttl: float,
        grace: float,
        rules: Sequence[TtlRule] = (),
        popularity_hits: int = 0,
        popularity_factor: float = 1.0,
        clock: Callable[[], float] = time.time,
        max_tracked: int = 100_000,
        max_tracked_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.default_ttl = default_ttl
        self.grace = grace
        self.rules = list(rules)
        self._patterns = {
            id(rule): re.compile(rule.text_regex) for rule in rules if rule.text_regex
        }
        # Popularity is off when either knob makes it meaningless.
        self.popularity_hits = popularity_hits if popularity_factor > 1.0 else 0
        self.popularity_factor = max(1.0, popularity_factor)
        self.clock = clock
        # Hit counts per entry, bounded by entries and bytes (the oldest counts go first).
        self._hits: BoundedDict[str, tuple[float, int]] = BoundedDict(
            max_tracked, max_tracked_bytes, _count_size
        )

    @property
    def tracked(self) -> tuple[int, int]:
        """Entries whose hits are counted now, and the bytes their counts take."""
        return len(self._hits), self._hits.bytes

    def resolve(self, request: SpeechRequest, engine: str, control: CacheControl) -> EntryPolicy:
        """The lifetime for audio made for `request` by `engine`."""
        chosen = EntryPolicy(self.default_ttl)
        for rule in self.rules:
            if self._matches(rule, request, engine):
                ttl = self.default_ttl if rule.ttl is None else rule.ttl
                chosen = EntryPolicy(
                    None if rule.pinned else ttl,
                    pinned=rule.pinned,
                    sliding=rule.sliding,
                    max_ttl=rule.max_ttl,
                )
                break
        if control.max_age is not None:
            ttl = control.max_age if chosen.ttl is None else min(chosen.ttl, control.max_age)
            chosen = replace(chosen, ttl=ttl, pinned=False)
        return chosen

    def _matches(self, rule: TtlRule, request: SpeechRequest, engine: str) -> bool:
        if rule.voice is not None and rule.voice != request.voice:
            return False
        if rule.emotion is not None and rule.emotion != request.emotion:
            return False
        if rule.engine is not None and rule.engine != engine:
            return False
        if rule.tag is not None and rule.tag not in request.tags:
            return False
        if rule.tags is not None and not set(rule.tags) <= set(request.tags):
            return False
        if rule.personalized is not None and rule.personalized != request.personalized:
            return False
        pattern = self._patterns.get(id(rule))
        return pattern is None or pattern.search(request.text) is not None

    def expiry(self, decided: EntryPolicy, now: float) -> tuple[float | None, float | None]:
        """(expires_at, stale_until) for an entry stored at `now`."""
        if decided.pinned or decided.ttl is None:
            return None, None
        expires_at = now + decided.ttl
        return expires_at, expires_at + self.grace

    def hit(self, entry_id: str, meta: EntryMeta) -> EntryMeta | None:
        """Count a hit on a stored entry; a new header when its life should be extended
        (sliding TTL, popularity), else None. Cheap: one dict update for most hits."""
        if meta.expires_at is None or meta.ttl is None:
            return None  # pinned: nothing to extend
        popular = False
        if self.popularity_hits:
            # Counted per stored generation of the entry: a re-synthesized entry (new
            # `created`) starts from zero and can become popular again.
            counted = self._hits.get(entry_id)
            hits = counted[1] + 1 if counted is not None and counted[0] == meta.created else 1
            if hits > self.popularity_hits:
                # Already extended (or about to be): stop counting, keep the table small.
                if not meta.sliding:
                    return None
                popular = True
            else:
                self._hits[entry_id] = (meta.created, hits)
                popular = hits == self.popularity_hits
        if not meta.sliding and not popular:
            return None
        return self.on_hit(meta, self.clock(), popular=popular)

    def hit_count(self, entry_id: str) -> int:
        """Hits counted towards popularity for the entry stored under `entry_id` (0 when
        popularity is off or the entry is not tracked)."""
        counted = self._hits.get(entry_id)
        return 0 if counted is None else counted[1]

    def on_hit(self, meta: EntryMeta, now: float, *, popular: bool = False) -> EntryMeta | None:
        """A new header when a hit at `now` should extend the entry's life, else None."""
        if meta.expires_at is None or meta.ttl is None:
            return None
        ttl = meta.ttl * (self.popularity_factor if popular else 1.0)
        if meta.sliding:
            target = now + ttl
        elif popular:
            target = meta.created + ttl
        else:
            return None
        if meta.max_expires_at is not None:
            target = min(target, meta.max_expires_at)
        # Rewriting headers costs I/O in every tier: only extend by meaningful steps.
        if target - meta.expires_at < max(1.0, meta.ttl * 0.05):
            return None
        return meta.with_expiry(target, self.grace)


def _count_size(entry_id: str, count: tuple[float, int]) -> int:
    return sizeof_str(entry_id) + 56 + 24 + 28  # the id, the tuple, its float and int
