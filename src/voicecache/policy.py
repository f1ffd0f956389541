"""Cache policy: how long audio lives, and what a request's `Cache-Control` asks for.

`Policy.resolve` turns a request into an `EntryPolicy` (TTL, pinned, sliding). The gateway
asks it once per store and once per hit (`on_hit`, for sliding expiry); it never decides
anything about lifetimes itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from voicecache.config import TtlRule
from voicecache.request import SpeechRequest
from voicecache.tiers.base import EntryMeta


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
        directives = [part.strip().lower() for part in header.split(",") if part.strip()]
        max_age: float | None = None
        for directive in directives:
            name, _, value = directive.partition("=")
            if name.strip() == "max-age":
                try:
                    max_age = max(0.0, float(value.strip().strip('"')))
                except ValueError:
                    max_age = None
        return cls("no-cache" in directives, "no-store" in directives, max_age)


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_ttl = default_ttl
        self.grace = grace
        self.rules = list(rules)
        self._patterns = {
            id(rule): re.compile(rule.text_regex) for rule in rules if rule.text_regex
        }
        self.clock = clock

    def resolve(self, request: SpeechRequest, engine: str, control: CacheControl) -> EntryPolicy:
        """The lifetime for audio made for `request` by `engine`."""
        chosen = EntryPolicy(self.default_ttl)
        for rule in self.rules:
            if self._matches(rule, request, engine):
                chosen = EntryPolicy(
                    None if rule.pinned else (rule.ttl or self.default_ttl),
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

    def on_hit(self, meta: EntryMeta, now: float) -> EntryMeta | None:
        """A new header when a hit should extend the entry's life (sliding TTL), else None."""
        if not meta.sliding or meta.expires_at is None or meta.ttl is None:
            return None
        target = now + meta.ttl
        if meta.max_expires_at is not None:
            target = min(target, meta.max_expires_at)
        # Rewriting headers costs I/O in every tier: only slide by meaningful steps.
        if target - meta.expires_at < max(1.0, meta.ttl * 0.05):
            return None
        return meta.with_expiry(target, self.grace)
