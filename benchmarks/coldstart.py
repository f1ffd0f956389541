"""Cold start at scale: a disk tier holding 10,000, 100,000 and 1,000,000 entries, restarted.

For each size this script fills a cache directory, then measures in fresh processes:

- **first hit**: a new process opens the tier on the directory and answers one lookup. Before
  the first run the index and the entry's file are evicted from the page cache
  (`posix_fadvise(DONTNEED)`, so no root is needed), as after a reboot; the next runs are warm.
  Reported: the time from constructing the tier to the entry in hand, and the whole process
  (interpreter start, imports, exit);
- **RSS** of that process after the hit (VmRSS);
- **index size** on disk (the SQLite file after a checkpoint), and per entry;
- **purge by voice**: `purge()` of one voice of 100 (1 % of the entries) through a
  `TieredCache`, in a fresh process: an index query, then the deletes in batches;
- **a gateway restarted on the directory**: `voicecache serve` (1 worker, disk tier only) stores
  one real line (`POST /tts`), stops, has the index evicted from the page cache, and starts
  again; reported: start → `/healthz` answers, then the first `POST /tts` of that line (a disk
  HIT), and the worker's RSS after it;
- **sweep**: the background sweeper's pass (entries past their grace period, or of an
  engine's previous model version): one query of the index; no entry file is opened, and in
  this run nothing is due.

Generation, to keep it quick: entries are ~2 KB files (1.5 KB of bytes plus the header) written
directly in the value layout and adopted into the index in batches of 20,000 through
`DiskStore.adopt`, the migration's own code path; no audio is synthesized. 1,000,000 entries
take ~2 GB of files (4 GB of disk blocks) and a few minutes to generate.

Usage: ``python -m benchmarks.coldstart [--sizes 10000,100000,1000000] [--quick]
[--workdir DIR] [--keep] [--out FILE.json]``. Prints a Markdown table; ``make bench`` runs it
as the report's section 9.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from voicecache.cache.tiers.disk import files
from voicecache.cache.tiers.disk.headers import encode_header
from voicecache.cache.tiers.disk.index import DB_NAME
from voicecache.cache.tiers.disk.store import DiskStore
from voicecache.model import MAGIC, EntryMeta, checksum

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000,)
VOICES = 100
PAYLOAD = 1500
RUNS = 3  # first hits measured cold, and as many warm: medians reported
ADOPT_BATCH = 20_000

FIRST_HIT = """
import time
started = time.perf_counter()
import asyncio, json, sys
from pathlib import Path
from voicecache.cache.tiers.disk import DiskTier
imported = time.perf_counter()

async def main() -> dict:
    opened = time.perf_counter()
    tier = DiskTier(Path(sys.argv[1]), 1 << 40)
    entry = await tier.get(sys.argv[2])
    hit = time.perf_counter()
    assert entry is not None
    await tier.aclose()
    status = Path("/proc/self/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {"first_hit": hit - opened, "imports": imported - started, "rss_kib": rss}

print(json.dumps(asyncio.run(main())))
"""

PURGE_AND_SWEEP = """
import asyncio, json, sys, time
from pathlib import Path
from voicecache.cache.invalidation.purge import PurgeFilter, purge
from voicecache.cache.invalidation.sweeper import Sweeper
from voicecache.cache.tiers import TieredCache
from voicecache.cache.tiers.disk import DiskTier

async def main() -> dict:
    tier = DiskTier(Path(sys.argv[1]), 1 << 40)
    cache = TieredCache([tier])
    await tier.stats()  # open the index first: time the purge alone
    started = time.perf_counter()
    report = await purge(cache, PurgeFilter.create(now=time.time(), voice=sys.argv[2]))
    purged = time.perf_counter() - started
    versions = {"espeak": "espeak-ng-1.52", "emotivoice": "emotivoice-1"}
    sweeper = Sweeper(cache, lambda: versions, interval=0, clock=time.time)
    started = time.perf_counter()
    swept = await sweeper.sweep()
    sweep = time.perf_counter() - started
    stats = await tier.stats()
    await tier.aclose()
    return {"purge": purged, "purged": report.entries, "sweep": sweep,
            "swept": swept.entries, "left": stats.entries}

print(json.dumps(asyncio.run(main())))
"""


def _tree_rss_kib(pid: int) -> int:
    """The largest VmRSS in the process tree of `pid` (the worker, with 1 worker)."""
    from benchmarks.hitpath import _process_tree
    from benchmarks.rss import rss_bytes

    largest = 0
    for member in _process_tree(pid):
        try:
            largest = max(largest, rss_bytes(member))
        except (OSError, RuntimeError):  # gone meanwhile, or a zombie without VmRSS
            continue
    return largest // 1024


def gateway_restart(data_dir: Path) -> dict[str, Any]:
    """Store one real line through a gateway on `data_dir`, restart it cold, time the first hit."""
    from benchmarks.hitpath import TTS_BODY, _fetch

    env = {"VOICECACHE_TIERS": "disk", "VOICECACHE_DISK_BYTES": str(1 << 40)}
    body = json.dumps(TTS_BODY).encode()
    gateway, url = h.start_gateway(env, data_dir=data_dir)
    try:
        status, headers, _ = _fetch(f"{url}/tts", body)
        if status != 200:
            raise RuntimeError(f"POST /tts answered {status}")
    finally:
        gateway.stop()
    index = data_dir / "cache" / DB_NAME
    drop_from_page_cache([index, Path(f"{index}-wal"), Path(f"{index}-shm")])
    started = time.perf_counter()
    gateway, url = h.start_gateway(env, data_dir=data_dir, wait=False)
    try:
        gateway.wait_http(f"{url}/healthz")
        ready = time.perf_counter()
        status, headers, _ = _fetch(f"{url}/tts", body)
        answered = time.perf_counter()
        cache = {k.lower(): v for k, v in headers.items()}.get("x-cache")
        if status != 200 or cache != "HIT":
            raise RuntimeError(f"first request after restart: {status}, X-Cache {cache}")
        return {
            "gateway_ready": ready - started,
            "gateway_first_hit": answered - ready,
            "gateway_rss_kib": _tree_rss_kib(gateway.pid),
        }
    finally:
        gateway.stop()


def entry_id(number: int) -> str:
    return hashlib.blake2b(number.to_bytes(8, "big"), digest_size=32).hexdigest() + ".flac"


def _write(root: Path, work: list[tuple[str, bytes]]) -> None:
    for filename, blob in work:
        with open(root / filename, "wb") as out:
            out.write(blob)


def generate(root: Path, count: int) -> dict[str, float]:
    """Fill `root` with `count` entries of ~2 KB; returns timings."""
    started = time.perf_counter()
    store = DiskStore(root, 1 << 40)
    store.open()  # a new, empty directory: nothing to migrate
    # File creation is filesystem-bound (syscalls release the GIL): threads overlap it.
    pool = ThreadPoolExecutor(8)
    folders = [f"{n >> 8:02x}/{n & 255:02x}" for n in range(256 * 256)]
    list(pool.map(lambda folder: (root / folder).mkdir(parents=True, exist_ok=True), folders))
    now = time.time()
    batch: list[tuple[str, str, int, EntryMeta, float]] = []
    writes: list[Future[None]] = []
    chunk: list[tuple[str, bytes]] = []
    for number in range(count):
        eid = entry_id(number)
        data = number.to_bytes(8, "big") * (PAYLOAD // 8)
        meta = EntryMeta(
            key=eid.split(".")[0],
            format="flac",
            sample_rate=22050,
            duration=1.0,
            size=len(data),
            checksum=checksum(data),
            created=now - number,
            expires_at=now + 30 * 86400,
            stale_until=now + 31 * 86400,
            engine="espeak",
            model_version="espeak-ng-1.52",
            voice=f"v{number % VOICES:03d}",
            text=f"cold start line number {number}",
            tags=("bench",) if number % 10 == 0 else (),
        )
        header = encode_header(meta)  # the same framing as `Entry.to_bytes`, built faster
        blob = b"".join((MAGIC, len(header).to_bytes(4, "big"), header, data))
        filename = files.new_filename()
        chunk.append((filename, blob))
        if len(chunk) == 500:
            writes.append(pool.submit(_write, root, chunk))
            chunk = []
        batch.append((eid, filename, len(blob), meta, now - count + number))
        if len(batch) == ADOPT_BATCH:
            store.adopt(batch)
            batch = []
        if number and number % 100_000 == 0:
            h.log(f"  {number:,} entries written")
    writes.append(pool.submit(_write, root, chunk))
    if batch:
        store.adopt(batch)
    for write in writes:
        write.result()
    pool.shutdown()
    store.index.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    generated = time.perf_counter() - started
    os.sync()  # clean pages, so that DONTNEED really drops them
    return {"generate": generated, "sync": time.perf_counter() - started - generated}


def drop_from_page_cache(paths: Sequence[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child(script: str, *args: str) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [h.PYTHON, "-c", script, *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout), wall


def measure(root: Path, count: int) -> dict[str, Any]:
    h.log(f"{count:,} entries: generating in {root}")
    data_dir = root
    root = data_dir / "cache"
    result: dict[str, Any] = {"entries": count, **generate(root, count)}
    h.log(f"  generated in {result['generate']:.0f} s")
    index = root / DB_NAME
    result["index_bytes"] = index.stat().st_size
    targets = [entry_id(count // 2 + n) for n in range(RUNS)]
    store = DiskStore(root, 1 << 40)
    store.open()
    located = [store.locate(target) for target in targets]
    store.close()
    cold = []
    for target, path in zip(targets, located, strict=True):
        assert path is not None
        drop_from_page_cache([index, Path(f"{index}-wal"), Path(f"{index}-shm"), path])
        cold.append(child(FIRST_HIT, str(root), target))
    warm = [child(FIRST_HIT, str(root), entry_id(count // 3 + n)) for n in range(RUNS)]
    result.update(
        first_hit_cold=statistics.median(run["first_hit"] for run, _ in cold),
        process_cold=statistics.median(wall for _, wall in cold),
        first_hit_warm=statistics.median(run["first_hit"] for run, _ in warm),
        process_warm=statistics.median(wall for _, wall in warm),
        imports=statistics.median(run["imports"] for run, _ in warm),
        rss_kib=max(run["rss_kib"] for run, _ in [*cold, *warm]),
    )
    h.log(f"  first hit {result['first_hit_cold'] * 1000:.1f} ms cold; purging one voice")
    purged, _ = child(PURGE_AND_SWEEP, str(root), "v007")
    result.update(purged)
    assert purged["purged"] == count // VOICES, purged
    h.log("  restarting a gateway on the directory")
    result.update(gateway_restart(data_dir))
    return result


def run(
    quick: bool = False, sizes: Sequence[int] | None = None, workdir: Path | None = None
) -> dict[str, Any]:
    """Measure each size in turn, in a fresh directory removed afterwards."""
    chosen = list(sizes or (QUICK_SIZES if quick else SIZES))
    top = Path(tempfile.mkdtemp(prefix="voicecache-coldstart-", dir=workdir))
    rows = []
    try:
        for count in chosen:
            root = top / f"cache-{count}"
            rows.append(measure(root, count))
            shutil.rmtree(root)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return {"sizes": chosen, "rows": rows}


def render_markdown(result: dict[str, Any]) -> str:
    return render(result["rows"]) + "\n"


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| entries | first hit after restart (cold / warm) | process start → hit → exit |"
        " RSS | gateway restart: start → ready, then first hit | worker RSS |"
        " index on disk | purge by voice (1 %) | sweep (nothing due) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['entries']:,} | {r['first_hit_cold'] * 1000:.1f} ms /"
            f" {r['first_hit_warm'] * 1000:.1f} ms | {r['process_cold'] * 1000:.0f} ms"
            f" | {r['rss_kib'] / 1024:.1f} MiB"
            f" | {r['gateway_ready'] * 1000:.0f} ms, then {r['gateway_first_hit'] * 1000:.1f} ms"
            f" | {r['gateway_rss_kib'] / 1024:.0f} MiB"
            f" | {r['index_bytes'] / 1_000_000:.1f} MB ({r['index_bytes'] / r['entries']:.0f} B"
            f" per entry) | {r['purge'] * 1000:.0f} ms ({r['purged']:,} entries)"
            f" | {r['sweep']:.2f} s |"
        )
    lines += [
        "",
        f"Entries of ~2 KB ({PAYLOAD} bytes plus the header) in the value layout, indexed by"
        " `DiskStore.adopt`. First hit: from constructing `DiskTier` to the entry in hand, in a"
        " fresh process; cold = index and entry file evicted from the page cache first; medians"
        f" of {RUNS} processes each. Process: interpreter start to exit (cold runs). RSS: that"
        " process after its hit. Gateway: `voicecache serve`, 1 worker, disk tier only, restarted"
        " with its index evicted from the page cache; ready = `/healthz` answers (interpreter,"
        " imports, app build); first hit = the first `POST /tts` after that, a disk HIT of a line"
        " stored before the restart; worker RSS after it. Purge and sweep: in a fresh process,"
        " index already opened.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZES[0]:,} entries only")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated directories")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = list(QUICK_SIZES) if args.quick else [int(size) for size in args.sizes.split(",")]
    if args.keep:  # keep the generated directories for a look afterwards
        workdir = Path(tempfile.mkdtemp(prefix="voicecache-coldstart-", dir=args.workdir))
        results = [measure(workdir / f"cache-{count}", count) for count in sizes]
        h.log(f"kept {workdir}")
    else:
        results = run(sizes=sizes, workdir=args.workdir)["rows"]
    print("### Cold start at scale (disk tier)\n")
    print(render(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
