"""Durations and sizes as people write them in settings and requests: `30d`, `250ms`, `256MiB`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


# Durations are bounded so that none can become `inf` (or a date no clock reaches).
MAX_DURATION_SECONDS = 36500 * 86400  # 100 years


def parse_duration(value: str | float | int) -> float:
    """Turn `30d`, `6h`, `90s`, `250ms` or a plain number of seconds into seconds (at most
    100 years)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30d, 6h, 15m, 90s, 250ms)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= MAX_DURATION_SECONDS:  # also catches inf and nan
        shown = value if len(str(value)) <= 20 else f"{str(value)[:20]}…"
        raise ValueError(f"duration {shown!r} is over the limit of 36500d (100 years)")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Turn `256MiB`, `2GB`, `500k` or a plain number of bytes into bytes (binary units)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 256MiB, 2GiB, 500KiB)")
    unit = (match.group(2) or "b").lower()[0]
    factor = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    size = float(match.group(1)) * factor
    if not size <= 1 << 60:  # also catches inf
        raise ValueError(f"size {value[:20]!r} is over the limit of 1 EiB")
    return int(size)
