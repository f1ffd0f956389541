"""Stale-while-revalidate: a stale entry is served at once and refilled in the background.

With `stale_while_revalidate` on, a request that finds only a stale copy (past its TTL, within
its grace period) gets that copy without waiting, and the entry is refilled behind it. Every
stale hit for the same key while a refill runs shares that one refill: it is coalesced under
its own id in the gateway's `Coalescer`. Nobody awaits a refill; one that fails is logged, and
the next request simply tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from voicecache.cache.coalescing import Coalescer
from voicecache.model import SpeechResult

log = logging.getLogger(__name__)


class Refresher:
    """Runs background refills, one per work id at a time, until `aclose`."""

    def __init__(self, coalescer: Coalescer[SpeechResult]) -> None:
        self._coalescer = coalescer
        self._tasks: set[asyncio.Task[tuple[SpeechResult, bool]]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, work_id: str, refill: Callable[[], Awaitable[SpeechResult]]) -> None:
        """Run `refill` in the background unless a refill for `work_id` is already running."""
        if self._coalescer.running(work_id):
            return
        task = asyncio.ensure_future(self._coalescer.run(work_id, refill))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[tuple[SpeechResult, bool]]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background refresh failed: %s", task.exception())

    async def aclose(self) -> None:
        """Cancel the refills still running and wait for them to end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
