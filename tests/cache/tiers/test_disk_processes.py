"""The disk tier with real processes: start-up cost under strace, and one byte budget for
every process that shares a directory (two server workers plus a `voicecache warm`)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cache.tiers.disk_helpers import entry_for, real_bytes, value_files
from voicecache.cache.tiers import DiskTier
from voicecache.cache.tiers.disk import DiskMaintenance
from voicecache.cache.tiers.disk.index import DB_NAME

MIB = 1024 * 1024

# A fresh process: open the tier on an existing directory and answer one hit.
FIRST_HIT = """
import asyncio, sys
from pathlib import Path
from voicecache.cache.tiers import DiskTier

async def main() -> None:
    tier = DiskTier(Path(sys.argv[1]), 1 << 30)
    entry = await tier.get(sys.argv[2])
    assert entry is not None and len(entry.data) == int(sys.argv[3]), entry
    await tier.aclose()
    print("hit")

asyncio.run(main())
"""

# A writer process: stores `count` entries of 16-64 KiB (some ids shared with the other
# writers), reading back some earlier ones, then prints what it did.
WRITER = """
import asyncio, json, random, sys
from pathlib import Path
from tests.cache.tiers.disk_helpers import entry_for
from voicecache.cache.tiers import DiskTier

async def main() -> None:
    root, budget = Path(sys.argv[1]), int(sys.argv[2])
    seed, count = int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    tier = DiskTier(root, budget)
    written, hits = 0, 0
    for step in range(count):
        number = rng.randrange(40) if step % 5 == 0 else seed * 100_000 + step  # some shared
        eid, entry = entry_for(number, rng.randrange(16 * 1024, 64 * 1024))
        await tier.set(eid, entry)
        written += len(entry.data)
        if step % 3 == 0:
            back = entry_for(seed * 100_000 + rng.randrange(step + 1), 1)[0]
            hits += await tier.get(back) is not None
    stats = await tier.stats()
    await tier.aclose()
    print(json.dumps({"written": written, "hits": hits, "evictions": stats.evictions}))

asyncio.run(main())
"""


async def _populate(root: Path, count: int, size: int) -> list[str]:
    tier = DiskTier(root, 1 << 30, maintenance=DiskMaintenance(background=False))
    ids = []
    for number in range(count):
        eid, entry = entry_for(number, size)
        ids.append(eid)
        await tier.set(eid, entry)
    await tier.aclose()
    return ids


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (make system-deps)")
def test_restart_and_first_hit_open_a_few_files_not_one_per_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    ids = asyncio.run(_populate(root, 2000, 300))
    trace = tmp_path / "trace.txt"
    strace = ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(trace)]
    done = subprocess.run(
        [*strace, sys.executable, "-c", FIRST_HIT, str(root), ids[1234], "300"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hit"
    opened = [
        path for path in re.findall(r'"([^"]*)"', trace.read_text()) if path.startswith(str(root))
    ]
    print(f"{len(opened)} opens in the data directory: {sorted(set(opened))}")
    assert len(opened) <= 24
    assert any(path.endswith(DB_NAME) for path in opened)
    assert len({path for path in opened if path.endswith(".val")}) == 1


@pytest.mark.slow
def test_two_workers_and_a_warm_share_one_budget(tmp_path: Path) -> None:
    root, budget = tmp_path / "cache", 3 * MIB
    repo = Path(__file__).resolve().parents[3]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(budget), str(seed), "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=repo,
        )
        for seed in (1, 2, 3)  # two "workers" and a "warm"
    ]
    reports = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        reports.append(json.loads(out))
    written = sum(report["written"] for report in reports)
    on_disk = real_bytes(root)
    print(f"written {written / MIB:.1f} MiB through a 3 MiB budget; {on_disk / MIB:.2f} MiB left")
    assert written > 3 * budget  # the budget really had to be enforced
    assert 2 * MIB < on_disk <= budget
    assert sum(report["evictions"] for report in reports) > 0

    # The shared count is exact: it equals the files, with no orphan left behind.
    async def check() -> None:
        tier = DiskTier(root, budget, maintenance=DiskMaintenance(background=False))
        stats = await tier.stats()
        assert stats.bytes == on_disk
        assert stats.entries == len(value_files(root))
        await tier.aclose()

    asyncio.run(check())
