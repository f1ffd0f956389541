"""`voicecache doctor`: check the shared tiers and the engines a deployment relies on before
traffic does.

Redis: reachable (every master of a Cluster), version, and the memory settings that decide
what happens when it fills up: `maxmemory` 0 (unbounded: Redis grows until the machine
swaps or the OOM killer strikes) and `maxmemory-policy noeviction` (writes fail once full)
are warnings, and so are `allkeys-*` policies, which may evict the index that purges and sweeps
read (and pinned entries); the recommended setting is a bounded `maxmemory` with
`volatile-lfu` or `volatile-lru`: only entries with an expiry are evicted. S3: the bucket
exists and can be listed with the configured credentials. Engines: every configured engine
can be reached (`Engine.probe`: a GET for HTTP engines, the library loading for eSpeak) and,
with `--synthesize`, speaks one short word.

Prints one line per finding; a failed check ends with one readable error line and exit 1.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import typer

from voicecache.cli.common import ConfigOption, command, load_settings, run
from voicecache.errors import EngineError, EngineTimeout, StorageError
from voicecache.model import Engine, SynthesisJob
from voicecache.settings import Settings

_RECOMMENDED = "a bounded maxmemory with maxmemory-policy volatile-lfu (or volatile-lru)"


def redact(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


async def check_redis(settings: Settings) -> list[str]:
    """Findings for the configured Redis; raises `StorageError` when it cannot be used."""
    from redis.asyncio.cluster import RedisCluster
    from redis.exceptions import RedisError, ResponseError

    from voicecache.cluster.redis import make_client

    assert settings.redis_url is not None
    where = redact(settings.redis_url)
    client = make_client(
        settings.redis_url, cluster=settings.redis_cluster, timeout=max(settings.redis_timeout, 2)
    )
    findings: list[str] = []
    try:
        try:
            await client.ping()
            nodes: list[Any] = (
                client.get_primaries() if isinstance(client, RedisCluster) else [None]
            )
            for node in nodes:
                kwargs = {} if node is None else {"target_nodes": node}
                name = where if node is None else f"{where} master {node.host}:{node.port}"
                info: dict[str, Any] = await client.info("server", **kwargs)
                if node is not None:
                    info = next(iter(info.values())) if _nested(info) else info
                try:
                    config = await client.config_get("maxmemory*", **kwargs)
                except ResponseError:
                    findings.append(
                        f"warning: redis {name}: CONFIG is disabled (managed Redis?); make sure "
                        f"it runs with {_RECOMMENDED}"
                    )
                    continue
                if node is not None and _nested(config):
                    config = next(iter(config.values()))  # type: ignore[arg-type]
                findings += _memory_findings(name, str(info.get("redis_version", "?")), config)
        except (RedisError, OSError) as exc:
            raise StorageError(f"redis at {where}: {type(exc).__name__}: {exc}") from exc
    finally:
        await client.aclose()
    return findings


def _nested(reply: Any) -> bool:
    return (
        isinstance(reply, dict) and bool(reply) and all(isinstance(v, dict) for v in reply.values())
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _memory_findings(name: str, version: str, config: dict[Any, Any]) -> list[str]:
    settings = {_text(k): _text(v) for k, v in config.items()}
    maxmemory = int(settings.get("maxmemory", "0") or 0)
    policy = settings.get("maxmemory-policy", "?")
    findings = []
    if maxmemory == 0:
        findings.append(
            f"warning: redis {name}: maxmemory is 0 (unbounded): audio will fill the server's "
            f"memory; use {_RECOMMENDED}"
        )
    if policy == "noeviction":
        findings.append(
            f"warning: redis {name}: maxmemory-policy is noeviction: writes fail once Redis is "
            f"full; use volatile-lfu or volatile-lru"
        )
    if policy.startswith("allkeys-"):
        findings.append(
            f"warning: redis {name}: maxmemory-policy {policy} may evict the cache's index "
            f"(a purge may then miss audio) and pinned entries; use volatile-lfu or volatile-lru"
        )
    budget = f"{maxmemory / (1 << 20):.0f} MiB" if maxmemory else "unbounded"
    findings.append(f"ok: redis {name} (Redis {version}, maxmemory {budget}, {policy})")
    return findings


async def check_s3(settings: Settings) -> list[str]:
    """Findings for the configured S3 bucket; raises `StorageError` when it cannot be used."""
    from voicecache.cache.tiers.s3 import S3Tier

    assert settings.s3_bucket is not None
    tier = S3Tier(
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )
    try:
        await tier.check()
    finally:
        await tier.aclose()
    where = settings.s3_endpoint_url or "AWS"
    return [f"ok: s3 bucket {settings.s3_bucket} (prefix {settings.s3_prefix!r}) at {where}"]


# How long one engine may take to answer a probe or a one-word synthesis.
ENGINE_CHECK_SECONDS = 30.0


async def check_engines(settings: Settings, synthesize: bool = False) -> list[str]:
    """One finding per configured engine; raises `EngineError` for the first one that is down."""
    from voicecache.bootstrap import engine_specs
    from voicecache.engines import build_engines

    specs = engine_specs(settings)
    engines = build_engines(specs, default=settings.engine)
    findings: list[str] = []
    try:
        for name, engine in engines.items():
            spec = specs[name]
            where = f" at {redact(spec.url)}" if spec.url else ""
            # One attempt, not the server's retries: a doctor reports, it does not insist.
            direct = getattr(engine, "inner", engine)
            try:
                async with asyncio.timeout(ENGINE_CHECK_SECONDS):
                    await direct.probe()
                    line = f"ok: engine {name} ({spec.kind}{where}) is reachable"
                    if synthesize:
                        line += "; " + await _speak_one_word(direct)
            except TimeoutError:
                raise EngineTimeout(
                    f"engine {name}{where} did not answer within {ENGINE_CHECK_SECONDS:g} s"
                ) from None
            except EngineError as exc:
                if exc.detail.startswith(f"engine {name}"):
                    raise
                raise EngineError(f"engine {name}: {exc.detail}") from exc
            findings.append(line)
    finally:
        for engine in engines.values():
            await engine.aclose()
    return findings


async def _speak_one_word(engine: Engine) -> str:
    voices = engine.voices()
    if not voices:
        raise EngineError("offers no voice to synthesize with")
    job = SynthesisJob(text="Ready.", voice=voices[0].id)
    audio = await engine.synthesize(job)
    seconds = len(audio.samples) / audio.sample_rate
    return f"synthesized {seconds:.2f} s at {audio.sample_rate} Hz with voice {job.voice!r}"


async def diagnose(settings: Settings, synthesize: bool = False) -> list[str]:
    """Every finding, in order; raises on the first check that fails."""
    findings: list[str] = []
    if "redis" in settings.tiers and not settings.redis_url:
        raise StorageError("tier 'redis' is configured but VOICECACHE_REDIS_URL is not set")
    if "s3" in settings.tiers and not settings.s3_bucket:
        raise StorageError("tier 's3' is configured but VOICECACHE_S3_BUCKET is not set")
    if settings.redis_url:
        findings += await check_redis(settings)
    if settings.s3_bucket:
        findings += await check_s3(settings)
    if not findings:
        findings.append(
            f"ok: nothing shared to check (tiers: {','.join(settings.tiers)}); set "
            "VOICECACHE_REDIS_URL or VOICECACHE_S3_BUCKET to check them"
        )
    return findings + await check_engines(settings, synthesize)


@command
def doctor(
    synthesize: Annotated[
        bool, typer.Option("--synthesize", help="Also have each engine speak one short word")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Check Redis (reachable, maxmemory, eviction policy), S3 bucket access, and that every
    engine can be reached."""
    settings = load_settings(config)
    findings = run(lambda: diagnose(settings, synthesize))  # a failure: one line, exit code 1
    for line in findings:
        typer.echo(line)
