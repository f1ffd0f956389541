"""The allocator tuning keeps audio-sized buffers out of malloc's heaps, where freed ones would
leave holes the process never gives back (measured in fresh processes: mallopt is global)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from voicecache.allocator import tune_allocator

# Four threads keep a sliding window of audio-sized buffers (40-800 KB) next to small
# long-lived ones, as decoding, encoding and disk reads do; then malloc's own counters.
CHURN = """
import ctypes, json, random, sys, threading
from voicecache.allocator import tune_allocator

class MallInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo
applied = tune_allocator() if sys.argv[1] == "tuned" else {}
kept = []

def churn(seed):
    rng, alive = random.Random(seed), []
    kept.append(alive)
    for _ in range(2000):
        alive.append(b"a" * rng.randint(40_000, 800_000))
        alive.append(b"s" * rng.randint(100, 4000))
        if len(alive) > 60:
            del alive[rng.randrange(len(alive))]
            del alive[rng.randrange(len(alive))]

threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
info = libc.mallinfo2()
live = sum(len(block) for alive in kept for block in alive)
print(json.dumps({"applied": applied, "heap": info.arena, "free": info.fordblks, "live": live}))
"""


def churn(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_tuning_keeps_freed_audio_buffers_out_of_the_heap() -> None:
    plain, tuned = churn("plain"), churn("tuned")
    assert tuned["applied"] == {"MALLOC_MMAP_THRESHOLD_": 65536, "MALLOC_ARENA_MAX": 2}
    assert plain["live"] == tuned["live"]
    # Untuned, malloc serves the buffers from its heaps and holes pile up between them.
    assert plain["free"] > 8 * 2**20
    assert tuned["free"] < plain["free"] / 4
    assert tuned["heap"] < plain["heap"] / 4


def test_settings_from_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert tune_allocator() == {}
