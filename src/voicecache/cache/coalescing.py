"""Request coalescing inside one process: N concurrent identical misses, one engine call.

Like nginx's `proxy_cache_lock`: the first caller for an id becomes the leader and runs the
work in its own task; everyone arriving while it runs awaits the same task and gets the same
result, or the same error. The work runs in a task of its own (shielded from each waiter) so
that a leader whose client hangs up does not cancel the synthesis the others are waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Deduplicates concurrent work by id."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def running(self, work_id: str) -> bool:
        """Whether work for `work_id` is in flight."""
        return work_id in self._inflight

    async def run(self, work_id: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run `work` once for all concurrent callers with `work_id`.

        Returns the result and whether this caller was the leader."""
        task, leader = self.start(work_id, work)
        return await asyncio.shield(task), leader

    def start(self, work_id: str, work: Callable[[], Awaitable[T]]) -> tuple[asyncio.Task[T], bool]:
        """The task running the work for `work_id`, started from `work` when none runs yet
        (then this caller is the leader: the second value). For callers that follow the work
        while it runs (a streamed miss) instead of awaiting its end; await it shielded."""
        task = self._inflight.get(work_id)
        if task is not None:
            return task, False
        task = asyncio.ensure_future(work())
        self._inflight[work_id] = task
        task.add_done_callback(lambda done: self._finished(work_id, done))
        return task, True

    def _finished(self, work_id: str, task: asyncio.Task[T]) -> None:
        self._inflight.pop(work_id, None)
        if not task.cancelled():
            # Mark the error retrieved: when every waiter has gone, nobody else will.
            task.exception()
