"""Hot bodies in memory-backed files (`http/bodyfiles.py`), and the protocol lane sending
them with `sendfile`, also when the socket takes only part of a body."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import LiveApp
from tests.http.test_wirehits import exchange, host_port, in_memory, read_response, request, wire_of
from tests.security.test_auth import wait_for
from voicecache.http.bodyfiles import BodyFiles
from voicecache.model import EntryMeta, SpeechResult
from voicecache.settings import Settings

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")


def result_of(data: bytes, created: float = 1.0) -> SpeechResult:
    meta = EntryMeta(
        key="a" * 64, format="wav", sample_rate=22050, duration=1.0, size=len(data),
        checksum="", created=created, expires_at=None, stale_until=None,
    )  # fmt: skip
    return SpeechResult(data, "wav", "a" * 64, "HIT", "memory", meta)


def file_bytes(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size + 1, 0)


def test_files_hold_the_body_and_follow_the_entry() -> None:
    files = BodyFiles()
    body = os.urandom(40_000)
    fd = files.fd_for("one.wav", result_of(body))
    assert fd is not None and file_bytes(fd) == body
    assert files.fd_for("one.wav", result_of(body)) == fd  # reused while the entry is the same
    replaced = os.urandom(40_000)
    new_fd = files.fd_for("one.wav", result_of(replaced, created=2.0))  # re-synthesized
    assert new_fd is not None and file_bytes(new_fd) == replaced
    assert len(files) == 1 and files.bytes == 40_000
    assert files.fd_for("small.wav", result_of(b"x" * 100)) is None
    current = (new_fd, os.fstat(new_fd).st_ino)
    files.close()
    assert not still_open(current)


def opened(files: BodyFiles, entry_id: str, size: int) -> tuple[int, int]:
    """A new file for a body of `size` bytes: its descriptor and its inode (a closed
    descriptor's number may be reused; the inode tells the files apart)."""
    fd = files.fd_for(entry_id, result_of(os.urandom(size)))
    assert fd is not None
    return fd, os.fstat(fd).st_ino


def still_open(file: tuple[int, int]) -> bool:
    try:
        return os.fstat(file[0]).st_ino == file[1]
    except OSError:
        return False


def test_files_are_bounded_by_count_and_bytes() -> None:
    files = BodyFiles(max_files=3, max_bytes=100_000)
    made = [opened(files, f"{n}.wav", 20_000) for n in range(6)]
    assert len(files) == 3 and files.bytes == 60_000
    assert [still_open(file) for file in made] == [False] * 3 + [True] * 3  # oldest closed
    big = opened(files, "big.wav", 90_000)
    assert files.bytes == 90_000 and len(files) == 1
    assert not any(still_open(file) for file in made)
    files.close()
    assert not still_open(big)


def test_a_body_the_socket_takes_only_in_part_arrives_whole(
    serve: Callable[..., LiveApp], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body bigger than the kernel's largest send buffer on loopback (4 MiB here), to a
    client that reads slowly: `sendfile` stops part-way and the transport sends the rest."""
    monkeypatch.setattr(BodyFiles, "MAX_BODY", 64 * 1024 * 1024)
    live = serve(settings)
    text = " ".join(["The long line goes on, and on, and on again."] * 50)
    made = live.client.post("/tts", json={"text": text, "voice": "en", "format": "wav"})
    key, clip = made.headers["x-cache-key"], made.content
    assert len(clip) > 5_000_000
    wait_for(lambda: in_memory(live, key))
    bodies = wire_of(live).bodies
    partly = bodies.sent_partly
    with socket.socket() as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client slow to read
        conn.settimeout(10)
        conn.connect(host_port(live))
        conn.sendall(request("GET", f"/v1/audio/{key}.wav"))
        time.sleep(0.2)
        answer = read_response(conn.makefile("rb"))
    assert answer.endswith(b"\r\n\r\n" + clip)
    assert bodies.sent_partly == partly + 1
    # The next hit, to a client that reads at once, is sent from the same file as well.
    sent = bodies.sent_whole + bodies.sent_partly
    (again,) = exchange(live, request("GET", f"/v1/audio/{key}.wav"))
    assert again.endswith(b"\r\n\r\n" + clip)
    assert bodies.sent_whole + bodies.sent_partly == sent + 1


def test_body_files_never_hold_more_than_half_the_memory_tier(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings.model_copy(update={"memory_bytes": 1_000_000}))
    live.client.get("/healthz")
    assert wire_of(live).bodies.max_bytes == 500_000
    big = BodyFiles(max_bytes=50_000)
    assert big.fd_for("over.wav", result_of(os.urandom(60_000))) is None  # never filed
    assert len(big) == 0
