"""The audit log records admin actions from the CLI too and is always valid JSON; durations
are bounded, so no filter can write `Infinity` (issue #12 item 14)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.cli.test_cli import run_cli
from tests.conftest import LiveApp
from tests.security.test_auth import LINE, cli_in_process
from voicecache.security.audit import AuditLog
from voicecache.settings import Settings, parse_duration

HUGE = "9" * 400


def strict(line: str) -> Any:
    """JSON as RFC 8259 has it: no NaN or Infinity."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_cli_purges_are_audited(settings: Settings) -> None:
    said = cli_in_process("say", "Purge me", "-o", str(settings.data_dir / "x.wav"),
                          data_dir=settings.data_dir)  # fmt: skip
    assert said.exit_code == 0, said.output
    purged = run_cli("purge", "--voice", "en", "--older-than", "0s", data_dir=settings.data_dir)
    assert purged.returncode == 0, purged.stderr
    (record,) = AuditLog(settings.audit_path).read()
    assert record["action"] == "cache.purge" and record["actor"] == "cli"
    assert record["filter"] == {"voice": "en", "older_than": 0.0}
    assert record["entries"] >= 1


def test_an_endless_older_than_is_refused(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    live.client.post("/tts", json=LINE)
    response = live.client.delete("/admin/cache", params={"older_than": HUGE + "d"})
    assert response.status_code == 400
    assert "older_than" in response.json()["detail"]
    cli = cli_in_process("purge", "--older-than", HUGE + "d", data_dir=settings.data_dir)
    assert cli.exit_code == 2 and cli.stderr.strip().count("\n") == 0
    assert "older_than" in cli.stderr
    for line in (
        settings.audit_path.read_text().splitlines() if settings.audit_path.exists() else []
    ):
        strict(line)


@pytest.mark.parametrize("text", [HUGE, HUGE + "d", "1e400", "nan", "inf", "36501d"])
def test_durations_are_bounded(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_settings_refuse_endless_durations_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, default_ttl=HUGE + "d")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, memory_bytes=HUGE + "GiB")
    assert Settings(data_dir=tmp_path, default_ttl="36500d").default_ttl == 36500 * 86400


def test_audit_lines_are_strict_json_whatever_the_details(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.record("test", "cli", age=math.inf, ratio=math.nan, nested={"x": [-math.inf]})
    (line,) = (tmp_path / "audit.log").read_text().splitlines()
    record = strict(line)
    assert (
        record["age"] == "inf" and record["ratio"] == "nan" and record["nested"] == {"x": ["-inf"]}
    )
