"""Pre-generating a script of lines (`voicecache warm`), locally or against a running server.

Both targets go through the same gateway core: `LocalTarget` calls `Gateway.speak` in this
process (the cache is the configured tiers, so a server sharing them sees the lines), and
`RemoteTarget` POSTs each line to a server's `/tts`. Lines already cached come back as hits,
so a run that was interrupted resumes for free. At most `concurrency` lines are in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

from voicecache.cache.service import Gateway
from voicecache.errors import ServerUnreachable, VoicecacheError
from voicecache.keys import Normalization, normalize_text
from voicecache.model import SpeechRequest
from voicecache.warmup.script import BadLine, ScriptLine

Outcome = Literal["new", "cached", "failed"]


@dataclass(frozen=True, slots=True)
class LineResult:
    """What became of one line."""

    line: int
    outcome: Outcome
    characters: int = 0  # characters the engine synthesized for it (new lines only)
    reason: str = ""


class Target(Protocol):
    """Where lines are warmed."""

    async def warm(self, line: ScriptLine) -> LineResult: ...


def _outcome(status: str) -> Outcome:
    # COALESCED: another line of this run asked for the same audio at the same time.
    # PARTIAL: a text in segments, some of which the engine made.
    return "new" if status in ("MISS", "PARTIAL") else "cached"


@dataclass(frozen=True, slots=True)
class LineDefaults:
    """What a script line that leaves a field out gets, and how its text is normalized: the
    settings' values, passed in by the CLI."""

    voice: str
    format: str
    normalization: Normalization
    max_text_chars: int


@dataclass
class LocalTarget:
    """Warms through a `Gateway` in this process."""

    gateway: Gateway
    defaults: LineDefaults
    format: str | None = None

    async def warm(self, line: ScriptLine) -> LineResult:
        try:
            request = SpeechRequest.create(
                text=line.text,
                voice=line.voice or self.defaults.voice,
                emotion=line.emotion,
                speed=line.speed,
                format=self.format or self.defaults.format,
                engine=line.engine,
                tags=line.tags,
                normalization=self.defaults.normalization,
                max_text_chars=self.defaults.max_text_chars,
            )
            result = await self.gateway.speak(request)
        except VoicecacheError as exc:
            return LineResult(line.line, "failed", reason=exc.detail)
        if result.status == "STALE":
            return LineResult(line.line, "failed", reason="engine failed (a stale copy exists)")
        outcome = _outcome(result.status)
        return LineResult(line.line, outcome, len(request.text) if outcome == "new" else 0)


@dataclass
class RemoteTarget:
    """Warms by POSTing to a running server's `/tts`."""

    client: httpx.AsyncClient
    defaults: LineDefaults
    format: str | None = None

    async def check(self) -> None:
        """Raise `ServerUnreachable` unless the server answers `/healthz`."""
        try:
            response = await self.client.get("/healthz")
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"cannot reach {self.client.base_url}: {exc}") from None
        if response.status_code >= 500:
            raise ServerUnreachable(
                f"{self.client.base_url} answered /healthz with HTTP {response.status_code}"
            )

    async def warm(self, line: ScriptLine) -> LineResult:
        body = {
            "text": line.text,
            "voice": line.voice,
            "emotion": line.emotion,
            "speed": line.speed,
            "engine": line.engine,
            "tags": list(line.tags) or None,
            "format": self.format or self.defaults.format,
        }
        try:
            response = await self.client.post(
                "/tts", json={k: v for k, v in body.items() if v is not None}
            )
        except httpx.HTTPError as exc:
            return LineResult(line.line, "failed", reason=f"request failed: {exc!r}")
        if response.status_code != 200:
            return LineResult(line.line, "failed", reason=_detail(response))
        status = response.headers.get("x-cache", "")
        if status == "STALE":
            return LineResult(line.line, "failed", reason="engine failed (a stale copy exists)")
        outcome = _outcome(status)
        # The server does not say how long the normalized text was: normalize the same way.
        characters = len(normalize_text(line.text, self.defaults.normalization))
        return LineResult(line.line, outcome, characters if outcome == "new" else 0)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"HTTP {response.status_code}: {detail or response.text[:200]}"


@dataclass
class WarmReport:
    """The closing summary of a run."""

    results: list[LineResult] = field(default_factory=list)
    seconds: float = 0.0
    price_per_million_chars: float = 0.0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)

    @property
    def characters(self) -> int:
        return sum(result.characters for result in self.results)

    @property
    def cost(self) -> float:
        return self.characters * self.price_per_million_chars / 1_000_000

    @property
    def failures(self) -> list[LineResult]:
        return sorted((r for r in self.results if r.outcome == "failed"), key=lambda r: r.line)


async def warm_lines(
    lines: Sequence[ScriptLine],
    target: Target,
    *,
    concurrency: int,
    bad: Sequence[BadLine] = (),
    price_per_million_chars: float = 0.0,
    on_done: Callable[[LineResult], None] = lambda _: None,
) -> WarmReport:
    """Warm `lines` with at most `concurrency` in flight; `bad` rows are reported as failed."""
    started = time.perf_counter()
    report = WarmReport(price_per_million_chars=price_per_million_chars)
    report.results.extend(LineResult(row.line, "failed", reason=row.reason) for row in bad)
    queue: asyncio.Queue[ScriptLine] = asyncio.Queue()
    for line in lines:
        queue.put_nowait(line)

    async def worker() -> None:
        while True:
            try:
                line = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await target.warm(line)
            report.results.append(result)
            on_done(result)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(lines) or 1)))))
    report.seconds = time.perf_counter() - started
    return report
