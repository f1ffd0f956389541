"""The `voicecache` command, run as a user runs it: a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf


def run_cli(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "VOICECACHE_DATA_DIR": str(data_dir), **env}
    return subprocess.run(
        [sys.executable, "-m", "voicecache", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def test_say_writes_audio_and_uses_the_cache(tmp_path: Path) -> None:
    out = tmp_path / "line.wav"
    first = run_cli("say", "Welcome, new follower", "-o", str(out), data_dir=tmp_path / "d")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("MISS ")
    assert sf.info(io.BytesIO(out.read_bytes())).samplerate == 22050
    second = run_cli("say", "Welcome,  new follower", "-o", str(out), data_dir=tmp_path / "d")
    assert second.stdout.startswith("HIT ")


def test_key_prints_normalized_text_and_key(tmp_path: Path) -> None:
    a = run_cli("key", "\u3000你好 ", "--voice", "cmn", data_dir=tmp_path)
    b = run_cli("key", "你好", "--voice", "cmn", data_dir=tmp_path)
    assert a.returncode == 0
    assert "normalized: 你好" in a.stdout
    assert a.stdout == b.stdout


def test_errors_are_one_line_and_nonzero(tmp_path: Path) -> None:
    bad_voice = run_cli(
        "say", "hi", "-o", str(tmp_path / "x.wav"), "--voice", "zz", data_dir=tmp_path
    )
    assert bad_voice.returncode == 1
    assert bad_voice.stderr.strip().count("\n") == 0
    assert "unknown voice 'zz'" in bad_voice.stderr
    bad_setting = run_cli("key", "hi", data_dir=tmp_path, VOICECACHE_PORT="not-a-port")
    assert bad_setting.returncode == 2
    assert "invalid settings" in bad_setting.stderr
    missing_config = run_cli(
        "key", "hi", "--config", str(tmp_path / "nope.toml"), data_dir=tmp_path
    )
    assert missing_config.returncode == 2 and "config file not found" in missing_config.stderr


def test_toml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "voicecache.toml"
    config.write_text('normalization = "casefold"\n')
    a = run_cli("key", "HELLO", "--config", str(config), data_dir=tmp_path)
    b = run_cli("key", "hello", "--config", str(config), data_dir=tmp_path)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout


def test_serve_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", data_dir=tmp_path)
    assert result.returncode == 2
    assert "without API keys" in result.stderr


def test_serve_refuses_a_bad_engine_before_starting_workers(tmp_path: Path) -> None:
    # The parts are built once before uvicorn starts: one line, exit 2, no traceback.
    result = run_cli(
        "serve", "--port", "1", data_dir=tmp_path / "data", VOICECACHE_ENGINE="emotivoice"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: VOICECACHE_ENGINE='emotivoice' is not configured (set "
        "VOICECACHE_EMOTIVOICE_URL); configured engines: espeak"
    ]
