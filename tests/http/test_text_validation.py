"""The text limit applies to the normalized text, and a lone surrogate is a 422, not a 500
(issue #12 items 5, 6), on both synthesis routes and in the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import run_cli
from tests.conftest import LiveApp
from voicecache.settings import Settings

EXPANDER = "\ufdfa" * 223  # 223 characters; NFKC makes 4,014 of them
LONE = "hi \ud800 there"


def post(live: LiveApp, route: str, text: str, **extra: object) -> tuple[int, dict[str, object]]:
    field = "text" if route == "/tts" else "input"
    body = json.dumps({field: text, "voice": "en", **extra})  # escapes the surrogate as \ud800
    response = live.client.post(route, content=body, headers={"content-type": "application/json"})
    return response.status_code, response.json() if response.headers.get(
        "content-type", ""
    ).startswith("application/json") else {}


@pytest.mark.parametrize("route", ["/tts", "/v1/audio/speech"])
def test_nfkc_expansion_counts_against_the_limit(live: LiveApp, route: str) -> None:
    status, body = post(live, route, EXPANDER)
    assert status == 422
    assert "4014" in str(body["detail"]) and "4000" in str(body["detail"])
    assert live.engine_calls() == 0
    assert post(live, route, "\ufdfa" * 10)[0] == 200  # 180 characters: fine


@pytest.mark.parametrize("route", ["/tts", "/v1/audio/speech"])
def test_a_lone_surrogate_is_422(live: LiveApp, route: str) -> None:
    for text, extra in ((LONE, {}), ("fine", {"instructions": "calm \udfff"})):
        status, body = post(live, route, text, **extra)
        assert status == 422, body
        assert "surrogate" in str(body["detail"])
    assert live.engine_calls() == 0


def test_the_cli_answers_both_in_one_line(tmp_path: Path, settings: Settings) -> None:
    out = str(tmp_path / "x.wav")
    for args in (("say", EXPANDER, "-o", out), ("key", EXPANDER)):
        result = run_cli(*args, data_dir=settings.data_dir)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "4014" in result.stderr
        assert "Traceback" not in result.stderr
    # A lone surrogate reaches argv as an undecodable byte sequence (surrogateescape).
    for args in (("say", "hi \udced\udca0\udc80", "-o", out), ("key", "hi \udced\udca0\udc80")):
        result = run_cli(*args, data_dir=settings.data_dir)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "surrogate" in result.stderr
        assert "Traceback" not in result.stderr
