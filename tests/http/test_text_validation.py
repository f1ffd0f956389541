"""The text limit applies to the normalized text, and a lone surrogate is refused as bad input
(422; 400 in OpenAI's shape under /v1/), not a 500 (issue #12 items 5, 6), on both synthesis
routes and in the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import run_cli
from tests.conftest import LiveApp, error_message
from voicecache.settings import Settings

EXPANDER = "\ufdfa" * 223  # 223 characters; NFKC makes 4,014 of them
LONE = "hi \ud800 there"


# Bad input: 422 with `detail` natively, 400 with OpenAI's `error.message` under /v1/.
INVALID = {"/tts": 422, "/v1/audio/speech": 400}


def post(live: LiveApp, route: str, text: str, **extra: object) -> tuple[int, str]:
    field = "text" if route == "/tts" else "input"
    body = json.dumps({field: text, "voice": "en", **extra})  # escapes the surrogate as \ud800
    response = live.client.post(route, content=body, headers={"content-type": "application/json"})
    if response.status_code < 400:
        return response.status_code, ""
    return response.status_code, error_message(response)


@pytest.mark.parametrize("route", ["/tts", "/v1/audio/speech"])
def test_nfkc_expansion_counts_against_the_limit(live: LiveApp, route: str) -> None:
    status, message = post(live, route, EXPANDER)
    assert status == INVALID[route]
    assert "4014" in message and "4000" in message
    assert live.engine_calls() == 0
    assert post(live, route, "\ufdfa" * 10)[0] == 200  # 180 characters: fine


@pytest.mark.parametrize("route", ["/tts", "/v1/audio/speech"])
def test_a_lone_surrogate_is_422(live: LiveApp, route: str) -> None:
    for text, extra in ((LONE, {}), ("fine", {"instructions": "calm \udfff"})):
        status, message = post(live, route, text, **extra)
        assert status == INVALID[route], message
        assert "surrogate" in message
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
