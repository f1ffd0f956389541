"""The audit log: one JSON line per administrative action (key management, voice erasure,
purges), appended to `audit_log` (default `data_dir/audit.log`).

Each line is written with a single `write` on a file opened with O_APPEND, so lines from
several worker processes and the CLI never interleave. Lines are strict JSON (no `NaN` or
`Infinity`: a non-finite number is written as the string `inf`, `-inf` or `nan`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicecache.security.auth import Principal


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by its name (`inf`, `-inf`, `nan`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class AuditLog:
    """Appends audit records as JSON lines."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock

    def record(self, action: str, actor: Principal | str | None, **details: Any) -> None:
        """Write one record: when, what, who (key id and tenant, or `cli`), and details."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
            "action": action,
        }
        if isinstance(actor, Principal):
            entry["key_id"] = actor.key_id
            entry["tenant"] = actor.tenant
        else:
            entry["actor"] = actor
        entry.update(details)
        try:
            text = json.dumps(entry, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:  # a non-finite number: strict JSON has none, so write it as text
            text = json.dumps(_finite(entry), ensure_ascii=False, default=str, allow_nan=False)
        line = (text + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every record (for tests and `voicecache` inspection)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
