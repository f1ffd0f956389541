"""`voicecache warm`, `stats` and `inspect`, run as a user runs them (subprocesses), locally
and against a live server; and the script reader behind `warm`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import LiveApp
from voicecache.bootstrap import open_services
from voicecache.cli.main import app
from voicecache.cli.ops import money
from voicecache.errors import ScriptError
from voicecache.model import Entry
from voicecache.settings import Settings
from voicecache.warmup.script import read_script


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, data_dir: Path, **env: str) -> Ran:
    """The command run in this process (the CLI's start-up cost is paid once per suite; the
    subprocess test below covers the console entry point)."""
    environment = {
        "VOICECACHE_DATA_DIR": str(data_dir),
        "VOICECACHE_PRICE_PER_MILLION_CHARS": "20",
        **env,
    }
    result = CliRunner().invoke(app, list(args), env=environment)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def run_subprocess(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "VOICECACHE_DATA_DIR": str(data_dir),
        "VOICECACHE_PRICE_PER_MILLION_CHARS": "20",
    }
    return subprocess.run(
        [sys.executable, "-m", "voicecache", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=90,
    )


CSV = """text,voice,emotion,speed,tags
Welcome to the arena!,en,happy,1.0,intro;arena
Round one. Fight!,en,,1.2,
,en,,,
Too fast,en,,9,
"Thanks, friend",en+f3,,,gift
Bad emotion,en,furious,,
"""


def test_money_keeps_small_amounts_readable() -> None:
    assert [money(x) for x in (0.00012, 0.0815, 12.4, 1234.5)] == [
        "$0.000120", "$0.0815", "$12.40", "$1,234.50",
    ]  # fmt: skip


def test_script_reader_formats_and_line_numbers(tmp_path: Path) -> None:
    csv_file = tmp_path / "lines.csv"
    csv_file.write_text(CSV + 'Multi\nline,"en"\n"quoted,\nnewline",en\nSpeed,en,,fast,\n')
    script = read_script(csv_file)
    assert [line.line for line in script.lines] == [2, 3, 5, 6, 7, 8, 9, 10]
    assert script.lines[0].tags == ("intro", "arena")
    assert script.lines[0].emotion == "happy" and script.lines[1].speed == 1.2
    assert script.lines[3].text == "Thanks, friend" and script.lines[3].voice == "en+f3"
    assert script.lines[7].text == "quoted,\nnewline"  # starts on line 10, ends on 11
    assert [(bad.line, bad.reason) for bad in script.bad] == [
        (4, "text is empty"),
        (12, "speed is not a number: 'fast'"),
    ]

    jsonl = tmp_path / "lines.jsonl"
    jsonl.write_text(
        '{"text": "One", "tags": ["a", "b"]}\n\n{"text": "Two", "speed": true}\n'
        'not json\n{"text": "Three", "colour": "red"}\n["x"]\n'
    )
    script = read_script(jsonl)
    assert [(line.line, line.tags) for line in script.lines] == [(1, ("a", "b"))]
    assert [bad.line for bad in script.bad] == [3, 4, 5, 6]

    text = tmp_path / "lines.txt"
    text.write_text("# a comment\nHello there\n\n  General Kenobi\n")
    assert [(line.line, line.text) for line in read_script(text).lines] == [
        (2, "Hello there"),
        (4, "  General Kenobi"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("cols.csv", "words,voice\nhi,en\n", "unknown column(s) 'words'"),
        ("notext.csv", "voice\nen\n", "no text column"),
        ("empty.csv", "", "the file is empty"),
        ("latin1.txt", b"caf\xe9\n", "not UTF-8"),
    ],
)
def test_script_reader_rejects_unusable_files(
    tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ScriptError, match=re.escape(message)):
        read_script(path)


def test_warm_locally_reports_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "script.csv"
    script.write_text(CSV)
    first = run_subprocess("warm", str(script), "--concurrency", "3", data_dir=tmp_path / "d")
    assert first.returncode == 1, first.stderr  # three bad rows
    summary = first.stdout
    assert "new (synthesized)" in summary
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip()
             for line in summary.splitlines() if line.count("│") == 3}  # fmt: skip
    assert lines["new (synthesized)"] == "3"
    assert lines["already cached"] == "0"
    assert lines["failed"] == "3"
    characters = len("Welcome to the arena!") + len("Round one. Fight!") + len("Thanks, friend")
    assert lines["characters synthesized"] == f"{characters}"
    assert lines["estimated cost"] == f"{money(characters * 20 / 1e6)} ($20/M chars)"
    assert "line 4: text is empty" in summary
    assert "line 5: speed must be between 0.25 and 4.0" in summary
    assert "line 7: unknown emotion 'furious'" in summary
    assert "warming" in first.stderr  # the progress bar

    again = run_cli("warm", str(script), data_dir=tmp_path / "d")
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip()
             for line in again.stdout.splitlines() if line.count("│") == 3}  # fmt: skip
    assert lines["new (synthesized)"] == "0"
    assert lines["already cached"] == "3"
    assert lines["characters synthesized"] == "0"

    good = tmp_path / "good.txt"
    good.write_text("Welcome to the arena!\nA brand new line\n")
    third = run_cli("warm", str(good), "--format", "mp3", data_dir=tmp_path / "d")
    assert third.returncode == 0, third.stdout + third.stderr


def test_warm_usage_errors(tmp_path: Path) -> None:
    missing = run_cli("warm", str(tmp_path / "nope.csv"), data_dir=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: no such file")
    bad_columns = tmp_path / "bad.csv"
    bad_columns.write_text("phrase\nhi\n")
    result = run_cli("warm", str(bad_columns), data_dir=tmp_path)
    assert result.returncode == 2 and "unknown column(s) 'phrase'" in result.stderr
    script = tmp_path / "ok.txt"
    script.write_text("hello\n")
    unreachable = run_cli("warm", str(script), "--url", "http://127.0.0.1:9", data_dir=tmp_path)
    assert unreachable.returncode == 1
    assert "error: cannot reach http://127.0.0.1:9" in unreachable.stderr


def test_warm_and_stats_against_a_running_server(
    serve: Callable[..., LiveApp], settings: Settings, tmp_path: Path
) -> None:
    live = serve(settings)
    script = tmp_path / "script.jsonl"
    script.write_text(
        '{"text": "Server side line", "voice": "en"}\n'
        '{"text": "Server side line", "voice": "en"}\n'
        '{"text": "Another one", "voice": "nobody"}\n'
    )
    result = run_cli(
        "warm", str(script), "--url", live.url, "--concurrency", "1", data_dir=tmp_path
    )
    assert result.returncode == 1
    assert "line 3: HTTP 422: unknown voice 'nobody'" in result.stdout
    assert live.engine_calls() == 1
    hit = live.client.post(
        "/tts", json={"text": "Server side line", "voice": "en", "format": "flac"}
    )
    assert hit.headers["x-cache"] == "HIT"

    shown = run_cli("stats", "--url", live.url, data_dir=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "hit ratio" in shown.stdout and "66.7%" in shown.stdout  # 2 of 3 served from cache
    assert "espeak" in shown.stdout and "memory" in shown.stdout
    raw = json.loads(run_cli("stats", "--url", live.url, "--json", data_dir=tmp_path).stdout)
    assert raw["totals"]["requests"] == {"miss": 1, "hit": 2, "error": 1}
    down = run_cli("stats", "--url", "http://127.0.0.1:9", data_dir=tmp_path)
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_local_stats_and_inspect(tmp_path: Path) -> None:
    data = tmp_path / "d"
    said = run_cli(
        "say", "Inspect me", "--voice", "en", "-o", str(tmp_path / "a.wav"), data_dir=data
    )
    assert said.returncode == 0, said.stderr
    key = said.stdout.split()[1]

    local = json.loads(run_cli("stats", "--json", data_dir=data).stdout)
    disk = next(tier for tier in local["tiers"] if tier["name"] == "disk")
    assert disk["entries"] == 2  # canonical FLAC and the WAV variant
    assert local["engines"]["espeak"]["lines"] == 1
    assert local["engines"]["espeak"]["characters"] == len("Inspect me")
    table = run_cli("stats", data_dir=data)
    assert table.returncode == 0 and "stored lines by engine" in table.stdout

    by_key = json.loads(run_cli("inspect", key, "--json", data_dir=data).stdout)
    assert by_key["stored"] and by_key["normalized_text"] == "Inspect me"
    assert by_key["fields"]["voice"] == "en"
    formats = {(copy["tier"], copy["format"]) for copy in by_key["copies"]}
    assert formats == {("disk", "flac"), ("disk", "wav")}
    ttl = by_key["copies"][0]["ttl_left"]
    assert 30 * 86400 - 120 < ttl <= 30 * 86400

    by_text = run_cli("inspect", "--text", "  Inspect   me ", "--voice", "en", data_dir=data)
    assert by_text.returncode == 0, by_text.stderr
    assert key in by_text.stdout and "stored copies" in by_text.stdout
    assert "30.0d" in by_text.stdout or "29.9d" in by_text.stdout

    absent = run_cli("inspect", "--text", "Never said", data_dir=data)
    assert absent.returncode == 1 and "nothing stored" in absent.stdout
    assert run_cli("inspect", "xyz", data_dir=data).returncode == 2
    assert run_cli("inspect", data_dir=data).returncode == 2


def test_inspect_takes_a_unique_key_prefix(tmp_path: Path) -> None:
    data = tmp_path / "d"
    said = run_cli(
        "say", "Prefix me", "--voice", "en", "-o", str(tmp_path / "a.wav"), data_dir=data
    )
    key = said.stdout.split()[1]
    by_prefix = json.loads(run_cli("inspect", key[:6], "--json", data_dir=data).stdout)
    assert by_prefix["key"] == key and by_prefix["stored"]
    assert by_prefix["normalized_text"] == "Prefix me"

    # Another stored key with the same first six characters: six no longer name one key.
    twin = key[:6] + ("1" if key[6] == "0" else "0") + "0" * 57

    async def plant() -> None:
        async with open_services(Settings(data_dir=data)) as services:
            disk = next(t for t in services.gateway.cache.tiers if t.name == "disk")
            entry = await disk.get(f"{key}.flac")
            assert entry is not None
            await disk.set(f"{twin}.flac", Entry(entry.data, replace(entry.meta, key=twin)))

    asyncio.run(plant())
    ambiguous = run_cli("inspect", key[:6], data_dir=data)
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.count("\n") == 1 and "ambiguous" in ambiguous.stderr
    assert key in ambiguous.stderr and twin in ambiguous.stderr
    assert json.loads(run_cli("inspect", key[:7], "--json", data_dir=data).stdout)["key"] == key
    unknown_prefix = next(
        p for p in ("0000", "1111") if not key.startswith(p) and not twin.startswith(p)
    )
    unknown = run_cli("inspect", unknown_prefix, data_dir=data)
    assert unknown.returncode == 1
    assert unknown.stderr == f"error: nothing stored under a key starting with {unknown_prefix}\n"
    too_short = run_cli("inspect", key[:3], data_dir=data)
    assert too_short.returncode == 2 and "at least 4" in too_short.stderr


def test_stats_against_a_keyed_server_says_how_to_pass_a_key(
    serve: Callable[..., LiveApp], settings: Settings, tmp_path: Path
) -> None:
    from voicecache.security.auth import KeyStore

    admin, _ = KeyStore(settings.keys_path).add("ops", ["admin"])
    speaker, _ = KeyStore(settings.keys_path).add("app", ["speak"])
    live = serve(settings)
    anonymous = run_cli("stats", "--url", live.url, data_dir=tmp_path)
    assert anonymous.returncode == 1
    assert anonymous.stderr == (
        f"error: {live.url} answered /dashboard/data with HTTP 401: pass a key with --api-key "
        "or VOICECACHE_API_KEY\n"
    )
    weak = run_cli("stats", "--url", live.url, "--api-key", speaker, data_dir=tmp_path)
    assert weak.returncode == 1 and "HTTP 403: the key lacks the admin scope" in weak.stderr
    shown = run_cli("stats", "--url", live.url, data_dir=tmp_path, VOICECACHE_API_KEY=admin)
    assert shown.returncode == 0 and "hit ratio" in shown.stdout
