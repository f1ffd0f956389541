"""Watching what a tier asks of its real backend: every command a Redis server (or each node
of a cluster) runs, through `MONITOR`, and every S3 request an aioboto3 client makes, through
a wrapper around its `_make_api_call`. The calls are real; they are only recorded."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass
class Commands:
    """Commands Redis ran (from MONITOR), each as its words."""

    seen: list[list[str]] = field(default_factory=list)

    def named(self, *names: str) -> list[list[str]]:
        wanted = {name.upper() for name in names}
        return [words for words in self.seen if words and words[0].upper() in wanted]

    def keys_with(self, prefix: str, *, exclude: tuple[str, ...] = ()) -> set[str]:
        """Words that start with `prefix` (keys: entry ids and summaries never do), in
        commands other than `exclude`."""
        skip = {name.upper() for name in exclude}
        return {
            word
            for words in self.seen
            if words and words[0].upper() not in skip
            for word in words[1:]
            if word.startswith(prefix)
        }


@contextmanager
def monitored(urls: list[str]) -> Iterator[Commands]:
    """Record every command the servers at `urls` run inside the block (scripts' own
    commands included: MONITOR reports them as the `lua` client)."""
    commands = Commands()
    marker = f"stop-monitor-{uuid.uuid4().hex}"
    ready = [threading.Event() for _ in urls]
    lock = threading.Lock()

    def watch(url: str, started: threading.Event) -> None:
        with redis.Redis.from_url(url) as client, client.monitor() as monitor:
            started.set()
            for event in monitor.listen():
                text = str(event["command"])
                if marker in text:
                    return
                with lock:
                    commands.seen.append(text.split())

    threads = [
        threading.Thread(target=watch, args=(url, started), daemon=True)
        for url, started in zip(urls, ready, strict=True)
    ]
    for thread in threads:
        thread.start()
    for started in ready:
        assert started.wait(5), "MONITOR did not start"
    time.sleep(0.05)  # the MONITOR command itself has reached each server
    try:
        yield commands
    finally:
        for url in urls:
            with redis.Redis.from_url(url) as client:
                client.echo(marker)
        for thread in threads:
            thread.join(5)
        # Our own ECHO (and the HELLO of its connection) are not the tier's.
        commands.seen = [w for w in commands.seen if w and w[0].upper() not in {"HELLO", "ECHO"}]


@dataclass
class S3Calls:
    """S3 operations an aioboto3 client made: (operation name, parameters)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def operations(self) -> list[str]:
        return [name for name, _ in self.calls]

    def keys(self, operation: str) -> list[str]:
        """Object keys the calls of `operation` named (DeleteObjects: every key in it)."""
        found: list[str] = []
        for name, params in self.calls:
            if name != operation:
                continue
            if "Key" in params:
                found.append(params["Key"])
            for item in params.get("Delete", {}).get("Objects", ()):
                found.append(item["Key"])
        return found

    def clear(self) -> None:
        self.calls.clear()


def count_s3_calls(client: Any) -> S3Calls:
    """Wrap the client's `_make_api_call` (every operation and paginator goes through it)."""
    recorded = S3Calls()
    original = client._make_api_call

    async def counting(operation: str, params: dict[str, Any]) -> Any:
        recorded.calls.append((operation, dict(params)))
        return await original(operation, params)

    client._make_api_call = counting
    return recorded
