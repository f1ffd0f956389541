"""A fixed corpus of hostile input (issue #12): strings for every text field, and raw bodies.

Strings are what a client can put into a JSON string, a form field or a command-line argument;
bodies are byte sequences that are not (or not quite) the JSON a route expects. Names are
stable, so a failing case reads in the test id.
"""

from __future__ import annotations

STRINGS: dict[str, str] = {
    "lone-high-surrogate": "hi \ud800 there",
    "lone-low-surrogate": "\udfff",
    "reversed-surrogate-pair": "a\udc00\ud800b",
    "nfkc-expander-223": "\ufdfa" * 223,  # 4,014 characters after NFKC
    "nfkc-expander-small": "\ufdfa\u3300\ufb2c" * 5,
    "nfkc-ligatures-to-empty": "\u200b\u00ad\ufeff" * 100,
    "bidi-override": "\u202eevil\u202c text",
    "bidi-isolates": "\u2066\u2067\u2068a\u2069\u200f\u061c",
    "nul": "a\x00b\x00",
    "only-nul": "\x00",
    "control-characters": "".join(chr(c) for c in range(1, 32)) + "\x7f\x85\x9b",
    "line-separators": "a\u2028b\u2029c\r\nd",
    "bom-inside": "\ufeffhello\ufeff",
    "emoji-zwj": "👩‍👩‍👧‍👦" * 50,
    "combining-flood": "a" + "\u0301" * 5000,
    "long-4001": "x" * 4001,
    "huge-70k": "y" * 70_000,
    "json-lookalike": '{"text": "x"}\\"\\u0000',
    "path-tricks": "../../etc/passwd%00.wav",
    "format-string": "%s%n%x{0}{text}${HOME}",
    "sql-ish": "'; DROP TABLE keys; --",
    "whitespace-only": " \t\n\u3000\u00a0",
    "empty": "",
}

_DEEP = 10_000

BODIES: dict[str, bytes] = {
    "json-1mb": b'{"text": "' + b"a" * (1024 * 1024) + b'", "voice": "en"}',
    "nested-10000-array": b'{"text": "hi", "voice": "en", "tags": '
    + b"[" * _DEEP
    + b"]" * _DEEP
    + b"}",
    "nested-10000-object": b'{"text": "hi", "voice": "en", "x": '
    + b'{"a":' * _DEEP
    + b"1"
    + b"}" * _DEEP
    + b"}",
    "nested-10000-bare": b"[" * _DEEP,
    "nan-speed": b'{"text": "hi", "voice": "en", "speed": NaN}',
    "infinity-speed": b'{"text": "hi", "voice": "en", "speed": Infinity}',
    "minus-infinity-speed": b'{"text": "hi", "voice": "en", "speed": -Infinity}',
    "overflow-speed": b'{"text": "hi", "voice": "en", "speed": 1e999}',
    "huge-int-speed": b'{"text": "hi", "voice": "en", "speed": ' + b"9" * 5000 + b"}",
    "duplicate-keys": b'{"text": "first", "text": "second", "voice": "en", "voice": "cmn"}',
    "bom-body": b'\xef\xbb\xbf{"text": "hi", "voice": "en"}',
    "utf16-body": '{"text": "hi", "voice": "en"}'.encode("utf-16"),
    "overlong-slash": b'{"text": "a\xc0\xafb", "voice": "en"}',
    "overlong-nul": b'{"text": "a\xc0\x80b", "voice": "en"}',
    "overlong-3-byte": b'{"text": "\xe0\x80\xaf", "voice": "en"}',
    "encoded-surrogate": b'{"text": "\xed\xa0\x80", "voice": "en"}',
    "truncated-utf8": b'{"text": "\xe4\xbd", "voice": "en"}',
    "invalid-byte": b'{"text": "\xff\xfe", "voice": "en"}',
    "not-json": b"text=hi&voice=en",
    "json-null": b"null",
    "json-array": b'["text", "voice"]',
    "json-string": b'"hello"',
    "empty": b"",
    "trailing-garbage": b'{"text": "hi", "voice": "en"} trailing',
}
