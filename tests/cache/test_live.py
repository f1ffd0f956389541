"""`LiveRender`: followers replay what was made, then follow live; breaks reach everyone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from voicecache.cache.live import LiveRender
from voicecache.errors import EngineError, EngineUnavailable
from voicecache.model import Entry, EntryMeta, SpeechResult


def _result() -> SpeechResult:
    meta = EntryMeta("k" * 64, "pcm", 24000, 0.1, 6, "x", 0.0, None, None)
    return SpeechResult.of(Entry(b"abcdef", meta), "MISS", None)


async def _collect(chunks: AsyncGenerator[bytes, None]) -> bytes:
    return b"".join([data async for data in chunks])


async def test_an_early_and_a_late_follower_get_every_byte_once_in_order() -> None:
    live = LiveRender()
    early = asyncio.ensure_future(_collect(live.follow()))
    await asyncio.sleep(0)  # the early follower is registered before any byte
    live.push(b"ab")
    assert live.started and live.opened.done()
    await asyncio.sleep(0)
    live.push(b"cd")
    late = asyncio.ensure_future(_collect(live.follow()))  # joins after two chunks
    await asyncio.sleep(0)
    live.push(b"ef")
    live.push(b"")  # empty pushes are ignored
    live.finish(_result())
    assert await early == await late == b"abcdef"
    assert await _collect(live.follow()) == b"abcdef"  # after the end: a replay
    assert live.result is not None and live.size == 6


async def test_a_follower_first_gets_what_was_made_then_waits_for_more() -> None:
    live = LiveRender()
    live.push(b"first")
    chunks = live.follow()
    assert await anext(chunks) == b"first"
    pending = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0.01)
    assert not pending.done()  # nothing new yet: it waits, it does not end
    live.push(b"second")
    assert await pending == b"second"
    live.finish(_result())
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


async def test_a_break_reaches_every_follower_after_its_bytes() -> None:
    live = LiveRender()
    live.push(b"half")
    followers = [asyncio.ensure_future(_collect(live.follow())) for _ in range(3)]
    await asyncio.sleep(0)
    live.fail(EngineUnavailable("engine openai broke off its stream"))
    live.finish(_result())  # too late: the first ending counts
    for follower in followers:
        with pytest.raises(EngineError, match="broke off after 4 bytes"):
            await follower
    assert live.result is None
    with pytest.raises(EngineError):
        await _collect(live.follow())


async def test_a_follower_that_leaves_is_forgotten() -> None:
    live = LiveRender()
    live.push(b"a")
    chunks = live.follow()
    await anext(chunks)
    await chunks.aclose()
    live.push(b"b")  # nobody is left to queue it for
    assert live._followers == set()
    live.finish(_result())
