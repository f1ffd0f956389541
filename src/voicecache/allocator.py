"""Keep the C allocator from fragmenting under audio-sized buffers, so a long-running server's
resident memory levels off instead of creeping up.

A server allocates and frees audio buffers of 40 KB to 1 MB all day (synthesis, decoding,
encoding, reading entries from disk). glibc's malloc serves blocks over `M_MMAP_THRESHOLD` with
`mmap` and gives them back to the kernel when they are freed, but by default it raises that
threshold to the largest block freed so far (up to 32 MiB). From then on audio buffers come
from the heap and leave holes it never returns, and every thread that allocates gets a heap of
its own to fragment. Under the mixed load of `benchmarks/rss.py` that made RSS climb about
1 MiB a minute with the Python objects flat (measured with `mallinfo2` and `/proc/self/smaps`:
the growth was free space inside malloc's heaps).

`tune_allocator` fixes the threshold (which also turns the dynamic raise off) and caps the
number of heaps. The price is page faults on fresh mappings: about 0.1 ms of CPU per disk hit
and 1-2 % per miss (memory hits allocate no buffers); the 15-minute run of `benchmarks/rss.py`
ended at 122 MiB, flat, against 161 MiB and rising untuned. Values the operator set through
glibc's own environment variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`) are left
alone. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 * 1024  # audio buffers are larger: each is mapped and unmapped whole
ARENA_MAX = 2  # the event loop and the worker threads share two heaps


def tune_allocator(
    mmap_threshold: int = MMAP_THRESHOLD, arena_max: int = ARENA_MAX
) -> dict[str, int]:
    """Apply the settings above to this process's malloc; returns what was set."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return {}
    applied: dict[str, int] = {}
    wanted = (
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, mmap_threshold),
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, arena_max),
    )
    for variable, option, value in wanted:
        if variable not in os.environ and mallopt(option, value) == 1:
            applied[variable] = value
    return applied
