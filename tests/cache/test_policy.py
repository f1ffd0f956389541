"""Policy rules, Cache-Control parsing, sliding expiry and popularity, without I/O."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from voicecache.cache.policy import CacheControl, EntryPolicy, Policy
from voicecache.model import EntryMeta, SpeechRequest
from voicecache.settings import Settings, TtlRule

DAY = 86400.0


class Clock:
    """A clock tests move by hand (no sleeping)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


RULES = [
    TtlRule(voice="vip", pinned=True),
    TtlRule(tag="story", ttl="30d"),
    TtlRule(personalized=True, ttl="6h"),
    TtlRule(text_regex=r"^Welcome", ttl="1h", sliding=True, max_ttl="1d"),
    TtlRule(engine="emotivoice", emotion="happy", ttl="2d"),
    TtlRule(tags=["a", "b"], ttl="3d"),
    TtlRule(voice="chatty", sliding=True),  # no ttl: the default, sliding
    TtlRule(voice="never", ttl=0),  # a zero TTL: not stored at all
]


def request(text: str = "Hello there", **fields: Any) -> SpeechRequest:
    return SpeechRequest.create(text=text, voice=fields.pop("voice", "en"), **fields)


@pytest.mark.parametrize(
    ("fields", "engine", "control", "expected"),
    [
        pytest.param({}, "espeak", CacheControl(), EntryPolicy(5 * DAY), id="default"),
        pytest.param(
            {"voice": "vip", "tags": ["story"]},
            "espeak",
            CacheControl(),
            EntryPolicy(None, pinned=True),
            id="first-match-wins-pinned",
        ),
        pytest.param(
            {"tags": ["story"]}, "espeak", CacheControl(), EntryPolicy(30 * DAY), id="tag"
        ),
        pytest.param(
            {"tags": ["story"], "personalized": True},
            "espeak",
            CacheControl(),
            EntryPolicy(30 * DAY),
            id="earlier-rule-beats-personalized",
        ),
        pytest.param(
            {"personalized": True}, "espeak", CacheControl(), EntryPolicy(6 * 3600), id="personal"
        ),
        pytest.param(
            {"text": "Welcome back, Ana"},
            "espeak",
            CacheControl(),
            EntryPolicy(3600, sliding=True, max_ttl=DAY),
            id="regex-sliding",
        ),
        pytest.param(
            {"text": "Say Welcome"},
            "espeak",
            CacheControl(),
            EntryPolicy(5 * DAY),
            id="regex-anchored",
        ),
        pytest.param(
            {"emotion": "happy"},
            "emotivoice",
            CacheControl(),
            EntryPolicy(2 * DAY),
            id="engine-and-emotion",
        ),
        pytest.param(
            {"emotion": "happy"},
            "espeak",
            CacheControl(),
            EntryPolicy(5 * DAY),
            id="engine-differs",
        ),
        pytest.param(
            {"tags": ["b", "a", "c"]}, "espeak", CacheControl(), EntryPolicy(3 * DAY), id="all-tags"
        ),
        pytest.param(
            {"tags": ["a"]}, "espeak", CacheControl(), EntryPolicy(5 * DAY), id="some-tags-only"
        ),
        pytest.param(
            {"voice": "chatty"},
            "espeak",
            CacheControl(),
            EntryPolicy(5 * DAY, sliding=True),
            id="rule-without-ttl-uses-default",
        ),
        pytest.param({"voice": "never"}, "espeak", CacheControl(), EntryPolicy(0.0), id="zero-ttl"),
        pytest.param(
            {"tags": ["story"]},
            "espeak",
            CacheControl(max_age=60),
            EntryPolicy(60),
            id="max-age-shortens",
        ),
        pytest.param(
            {"personalized": True},
            "espeak",
            CacheControl(max_age=1e9),
            EntryPolicy(6 * 3600),
            id="max-age-never-lengthens",
        ),
        pytest.param(
            {"voice": "vip"},
            "espeak",
            CacheControl(max_age=60),
            EntryPolicy(60),
            id="max-age-unpins",
        ),
    ],
)
def test_rules_resolve_first_match_wins(
    fields: dict[str, Any], engine: str, control: CacheControl, expected: EntryPolicy
) -> None:
    policy = Policy(default_ttl=5 * DAY, grace=DAY, rules=RULES)
    assert policy.resolve(request(**fields), engine, control) == expected


def test_rules_load_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "voicecache.toml"
    config.write_text(
        'default_ttl = "7d"\ngrace = "2h"\n'
        '[[ttl_rules]]\nvoice = "vip"\npinned = true\n'
        '[[ttl_rules]]\ntag = "welcome"\npersonalized = true\nttl = "6h"\n'
        'sliding = true\nmax_ttl = "1d"\n'
    )
    settings = Settings.load(config)
    assert settings.default_ttl == 7 * DAY and settings.grace == 7200
    assert settings.ttl_rules[0] == TtlRule(voice="vip", pinned=True)
    rule = settings.ttl_rules[1]
    assert (rule.ttl, rule.max_ttl, rule.sliding, rule.personalized) == (21600, DAY, True, True)


def test_a_bad_rule_regex_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="text_regex"):
        TtlRule(text_regex="(unclosed")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, CacheControl()),
        ("", CacheControl()),
        ("no-cache", CacheControl(no_cache=True)),
        ("No-Store, MAX-AGE=60", CacheControl(no_store=True, max_age=60)),
        ('no-cache="x-foo"', CacheControl(no_cache=True)),
        ('max-age="30"', CacheControl(max_age=30)),
        ("max-age=abc", CacheControl()),
        ("max-age=nan", CacheControl()),
        ("max-age=-5", CacheControl(max_age=0)),
        ("max-age=100, max-age=10", CacheControl(max_age=10)),
        ("private, must-revalidate", CacheControl()),
    ],
)
def test_cache_control_parsing(header: str | None, expected: CacheControl) -> None:
    assert CacheControl.parse(header) == expected


def meta(created: float, ttl: float, **fields: Any) -> EntryMeta:
    return EntryMeta(
        key="k" * 64,
        format="flac",
        sample_rate=22050,
        duration=1.0,
        size=1,
        checksum="",
        created=created,
        expires_at=created + ttl,
        stale_until=created + ttl + 10,
        ttl=ttl,
        **fields,
    )


def test_sliding_extends_each_hit_and_stops_at_max_ttl() -> None:
    clock = Clock(1000.0)
    policy = Policy(default_ttl=100, grace=10, clock=clock)
    current = meta(1000.0, 100, sliding=True, max_expires_at=1250.0)
    clock.advance(50)
    slid = policy.hit("id", current)
    assert slid is not None and slid.expires_at == 1150 and slid.stale_until == 1160
    clock.advance(0.5)  # a tiny step is not worth a header rewrite
    assert policy.hit("id", slid) is None
    clock.advance(100)
    capped = policy.hit("id", slid)
    assert capped is not None and capped.expires_at == 1250  # max_ttl reached
    clock.advance(50)
    assert policy.hit("id", capped) is None  # no further
    assert policy.hit("id", meta(1000.0, 100)) is None  # not sliding: nothing to do


def test_popular_entries_live_longer_once_and_bounded() -> None:
    clock = Clock(1000.0)
    policy = Policy(
        default_ttl=100, grace=10, popularity_hits=3, popularity_factor=2.0, clock=clock
    )
    current = meta(1000.0, 100)
    assert policy.hit("id", current) is None
    assert policy.hit("id", current) is None
    extended = policy.hit("id", current)
    assert extended is not None and extended.expires_at == 1200  # created + 2 × ttl
    for _ in range(20):  # later hits cost a dict lookup and change nothing
        assert policy.hit("id", extended) is None
    bounded = meta(1000.0, 100, max_expires_at=1150.0)
    for _ in range(2):
        policy.hit("other", bounded)
    capped = policy.hit("other", bounded)
    assert capped is not None and capped.expires_at == 1150  # max_ttl bounds popularity too
    refreshed = meta(5000.0, 100)  # re-synthesized after expiry: counted afresh
    assert policy.hit("id", refreshed) is None and policy.hit("id", refreshed) is None
    again = policy.hit("id", refreshed)
    assert again is not None and again.expires_at == 5200
    pinned = replace(current, expires_at=None, stale_until=None)
    assert all(policy.hit("pin", pinned) is None for _ in range(5))


def test_popular_sliding_entries_slide_further() -> None:
    clock = Clock(1000.0)
    policy = Policy(
        default_ttl=100, grace=10, popularity_hits=2, popularity_factor=3.0, clock=clock
    )
    current = meta(1000.0, 100, sliding=True)
    clock.advance(10)
    first = policy.hit("id", current)
    assert first is not None and first.expires_at == 1110
    second = policy.hit("id", first)
    assert second is not None and second.expires_at == 1310  # now + 3 × ttl


def test_hit_counts_stay_bounded() -> None:
    policy = Policy(
        default_ttl=100, grace=10, popularity_hits=5, popularity_factor=2.0, max_tracked=3
    )
    for index in range(50):
        policy.hit(f"id{index}", meta(0.0, 100))
    assert len(policy._hits) <= 3


def test_popularity_is_off_without_a_factor() -> None:
    policy = Policy(default_ttl=100, grace=10, popularity_hits=1, popularity_factor=1.0)
    assert policy.hit("id", meta(0.0, 100)) is None
    assert not policy._hits
