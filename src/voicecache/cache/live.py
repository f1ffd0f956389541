"""A render in progress, shared by every caller that streams it (streamed misses).

One fill per variant renders the audio (`fill.py`, coalesced by `lookup.py`); while it runs, a
`LiveRender` holds the encoded bytes made so far, in order. Every streaming caller follows it
with `follow()`: it first replays the bytes already made, then gets each new chunk as it is
made, through a queue of its own. So a caller that joins late does not wait for the end, and
all callers get the same bytes. The idea is Home Assistant's TTS cache (a list of the chunks
received so far, one `asyncio.Queue` per caller, errors to every caller, the joined bytes
stored at the end).

The fill decides how it ends: `finish(result)` once the audio is stored (so a request arriving
after the last byte finds it in the cache), or `fail(error)` when the render broke off. A
caller that has followed a render that fails gets an exception after the bytes it already has,
never a clean end: a short body must not pass for a complete file. Only the first of
`finish`/`fail` counts.

Replaying and following must not miss or repeat a chunk: a follower registers its queue and
copies the list in one step, with no `await` between (one event loop, one thread), so every
chunk is either in its copy or in its queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from voicecache.errors import EngineError, VoicecacheError
from voicecache.model import SpeechResult


class LiveRender:
    """The bytes of one render as they are made, for any number of followers."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        # Resolves at the first chunk: from then on, streaming callers follow the render (and
        # a failure can no longer be hidden behind a stale copy for them).
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.result: SpeechResult | None = None
        self.error: BaseException | None = None
        self.done = False
        self._followers: set[asyncio.Queue[bytes | None]] = set()

    @property
    def started(self) -> bool:
        """Whether any bytes have been handed on."""
        return self.opened.done()

    def push(self, data: bytes) -> None:
        """Hand on the next encoded bytes."""
        if self.done or not data:
            return
        self.chunks.append(data)
        self.size += len(data)
        for queue in self._followers:
            queue.put_nowait(data)
        if not self.opened.done():
            self.opened.set_result(None)

    def finish(self, result: SpeechResult) -> None:
        """The render is complete (and stored): `result` is the whole audio."""
        if self.done:
            return
        self.done = True
        self.result = result
        self._close()

    def fail(self, error: BaseException) -> None:
        """The render broke off: followers get an error after the bytes they have."""
        if self.done:
            return
        self.done = True
        self.error = error
        self._close()

    def _close(self) -> None:
        for queue in self._followers:
            queue.put_nowait(None)
        self._followers.clear()

    async def follow(self) -> AsyncGenerator[bytes, None]:
        """Every byte of the render, from the first, as soon as it is made; raises
        `EngineError` after the last byte if the render broke off."""
        queue: asyncio.Queue[bytes | None] | None = None
        if not self.done:
            queue = asyncio.Queue()
            self._followers.add(queue)
        replay = list(self.chunks)  # in the same step as registering: nothing missed
        try:
            if replay:
                yield b"".join(replay)
            while queue is not None:
                data = await queue.get()
                ready = [data]
                # A slow follower: send what has piled up in one piece.
                while data is not None and not queue.empty():
                    data = queue.get_nowait()
                    ready.append(data)
                ended = data is None
                joined = b"".join(part for part in ready if part is not None)
                if joined:
                    yield joined
                if ended:
                    break
        finally:
            if queue is not None:
                self._followers.discard(queue)
        if self.error is not None:
            detail = (
                self.error.detail
                if isinstance(self.error, VoicecacheError)
                else type(self.error).__name__
            )
            raise EngineError(
                f"the audio broke off after {self.size} bytes: {detail}"
            ) from self.error
