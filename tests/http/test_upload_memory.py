"""Uploaded voice samples never touch the disk unencrypted (issue #12 item 11): the multipart
parser keeps files up to `max_upload_bytes` in memory instead of spooling them to a temporary
file past 1 MiB. Seen from inside: an audit hook records every temporary file the process
creates while the upload is served."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveApp, error_message
from tests.voice_samples import master_key, voice_like
from voicecache.settings import Settings

_recording: list[tuple[str, str]] | None = None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _recording is None:
        return
    if event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
        # Only the default temporary directory: atomic writes into the data dir (of
        # encrypted files) use mkstemp there, which is fine.
        if str(args[0]).startswith(tempfile.gettempdir() + os.sep):
            _recording.append((event, str(args[0])))
    elif event == "open" and len(args) == 3:
        path, _, flags = args
        tmpfile = isinstance(flags, int) and flags & getattr(os, "O_TMPFILE", 0) == os.O_TMPFILE
        if tmpfile or str(path) == tempfile.gettempdir():
            _recording.append((event, str(path)))


sys.addaudithook(_hook)  # audit hooks cannot be removed: it records only inside `temp_files`


@pytest.fixture
def temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Temporary files created (by any thread of this process) while the fixture is active;
    `tempfile` is pointed at an empty directory, which must stay empty."""
    global _recording
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    _recording = []
    try:
        yield _recording
    finally:
        _recording = None
    assert list(spool.iterdir()) == []


def test_the_audit_hook_sees_a_spooled_file(temp_files: list[tuple[str, str]]) -> None:
    """The detector itself: a spooled file past its size is seen."""
    with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
        spooled.write(b"x" * 100)
    assert temp_files


def test_a_large_upload_is_kept_in_memory(
    serve: Callable[..., LiveApp], settings: Settings, temp_files: list[tuple[str, str]]
) -> None:
    live = serve(settings.model_copy(update={"master_key": master_key()}))
    sample = voice_like(seconds=50.0)  # 1.6 MB: past the parser's default 1 MiB spool
    assert len(sample) > 1024 * 1024
    response = live.client.post(
        "/v1/voices", data={"name": "long"}, files={"file": ("long.wav", sample)}
    )
    assert response.status_code == 201, response.text
    replaced = live.client.put(
        f"/v1/voices/{response.json()['id']}", files={"file": ("again.wav", sample[:-2000])}
    )
    assert replaced.status_code in (200, 422), replaced.text
    assert temp_files == []


def test_form_errors_stay_4xx(serve: Callable[..., LiveApp], settings: Settings) -> None:
    live = serve(settings.model_copy(update={"master_key": master_key()}))
    missing = live.client.post("/v1/voices", files={"file": ("s.wav", voice_like())})
    assert missing.status_code == 400 and error_message(missing)
    broken = live.client.post(
        "/v1/voices",
        content=b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx',
        headers={"content-type": "multipart/form-data"},  # no boundary
    )
    assert broken.status_code == 400 and error_message(broken)
