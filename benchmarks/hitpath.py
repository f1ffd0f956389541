"""Scenario 3, the hit path against the physical limit: voicecache cache hits beside nginx
serving the very same bytes as a static file, on the same machine, in the same run.

For each worker count (1, 2) nginx (Debian ``nginx-light``, ``sendfile on``, ``tcp_nopush
off``) and a voicecache gateway per tier (memory, disk, and Redis when that tier is on main)
run side by side. wrk measures, in rounds that alternate between the servers so that drift on
a shared machine hits them alike: nginx ``GET`` of the file, voicecache ``GET
/v1/audio/{key}.wav`` and ``POST /tts`` (a Lua script sends the JSON body), each at 1 and 32
connections. With 1 worker, servers run on core 0 and wrk on core 1; with 2 workers the
servers get both cores and wrk shares them. Any non-2xx answer invalidates a measurement (wrk
counts a 403 or 404 as throughput otherwise).

Finally py-spy samples the 1-worker memory-tier gateway under ``POST /tts`` load and the
profile is summarized by layer and by function.

Usage: ``python -m benchmarks.hitpath [--quick] [--out FILE.json]``
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _harness as h

TEXT = "Victory is ours, well played everyone!"
TTS_BODY = {"text": TEXT, "voice": "en", "format": "wav"}
ASGI_ONLY = "asgi-only"  # `voicecache serve` with VOICECACHE_WIRE_HITS=false


@dataclass(frozen=True)
class Params:
    workers: tuple[int, ...]
    connections: tuple[int, ...]
    tiers: tuple[str, ...]
    seconds: float
    rounds: int
    profile_seconds: float
    # Servers the gateway runs under: "voicecache" (`voicecache serve`: uvicorn, uvloop,
    # httptools, memory hits answered in the HTTP protocol), ASGI_ONLY (the same with
    # VOICECACHE_WIRE_HITS=false: the before/after of that lane) and "granian" (the same app
    # factory), side by side with 1 worker.
    servers: tuple[str, ...] = ("voicecache",)
    # A bare ASGI app serving the same bytes under the same uvicorn (bare_asgi.py): the
    # ceiling for any ASGI app, measured with the 1-worker memory tier.
    bare_asgi: bool = True


FULL = Params(
    workers=(1, 2),
    connections=(1, 32),
    tiers=("memory", "disk", "redis"),
    seconds=3.0,
    rounds=2,
    profile_seconds=6.0,
    servers=("voicecache", ASGI_ONLY, "granian"),
)
QUICK = Params(
    workers=(1,),
    connections=(32,),
    tiers=("memory",),
    seconds=1.0,
    rounds=1,
    profile_seconds=0.0,
)


# -- CPU time of a server's process tree ---------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes so far (all their threads)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / _TICK


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 latency (ms), requests, non-2xx and socket errors from wrk output."""
    rps = re.search(r"Requests/sec:\s*([\d.]+)", output)
    requests = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    errors = re.search(
        r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if not (rps and requests and p50 and p99):
        raise ValueError(f"unexpected wrk output:\n{output}")
    return {
        "rps": float(rps.group(1)),
        "requests": int(requests.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def wrk(
    url: str,
    connections: int,
    seconds: float,
    script: Path | None,
    cores: str | None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One wrk measurement; with `server_pid`, also the server's CPU time per request (its
    process tree's user + system time over the run), which other load on a shared machine
    disturbs far less than requests per second."""
    pids = _process_tree(server_pid) if server_pid is not None else []
    before = cpu_seconds(pids)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run(
        h.pinned([*command, url], cores),
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 30,
    )
    result = parse_wrk(done.stdout)
    result["valid"] = result["non_2xx"] == 0 and result["requests"] > 0
    if pids:
        used = cpu_seconds(pids) - before
        result["cpu_us_per_request"] = 1e6 * used / max(1, result["requests"])
    return result


def _post_script(directory: Path) -> Path:
    script = directory / "post.lua"
    body = json.dumps(TTS_BODY).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


# -- nginx ------------------------------------------------------------------------------------


BARE = "bare ASGI"


def _start_other(name: str, env: dict[str, str], cores: str | None) -> tuple[h.Process, str]:
    """The gateway beside `voicecache serve`: under another ASGI server, or (`ASGI_ONLY`)
    the same server with the protocol's hit lane off, so every hit goes through ASGI."""
    if name == ASGI_ONLY:
        return h.start_gateway({**env, "VOICECACHE_WIRE_HITS": "false"}, workers=1, cores=cores)
    return h.start_gateway(env, workers=1, cores=cores, server=name)


def start_bare_asgi(clip: Path, cores: str | None) -> tuple[h.Process, str]:
    """`benchmarks/bare_asgi.py` under uvicorn with `voicecache serve`'s settings."""
    port = h.free_port()
    command = [h.PYTHON, "-m", "uvicorn", "benchmarks.bare_asgi:app", "--port", str(port)]
    command += ["--host", h.LOOPBACK, "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log", "--log-level", "warning"]
    process = h.Process("bare-asgi", h.pinned(command, cores), env={"BARE_ASGI_FILE": str(clip)})
    process.start()
    url = f"http://{h.LOOPBACK}:{port}"
    process.wait_http(f"{url}/healthz")
    return process, url


def start_nginx(root: Path, workers: int, cores: str | None) -> tuple[h.Process, str]:
    """nginx serving ``root`` (world-readable, so its unprivileged workers can read it)."""
    port = h.free_port()
    conf_dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {workers};
daemon off;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    types {{ audio/wav wav; }}
    default_type application/octet-stream;
    client_body_temp_path {conf_dir}/body;
    server {{
        listen {h.LOOPBACK}:{port};
        root {root};
        location / {{ }}
    }}
}}
"""
    )
    process = h.Process("nginx", h.pinned(["nginx", "-c", str(conf), "-p", str(conf_dir)], cores))
    process.start()
    url = f"http://{h.LOOPBACK}:{port}"
    process.wait_http(url + "/")
    return process, url


# -- profile ----------------------------------------------------------------------------------


# py-spy names frames `function (package/module.py:line)`; the layer is the path's prefix.
_LAYERS = (
    ("voicecache fast lane", "voicecache/fastlane.py"),
    ("voicecache (other modules)", "voicecache/"),
    ("FastAPI", "fastapi/"),
    ("Starlette", "starlette/"),
    ("pydantic", "pydantic"),
    ("uvicorn (httptools protocol, response writes)", "uvicorn/"),
    ("event loop (uvloop's C code: polling, socket reads)", "asyncio/"),
)
# Always on the stack of a served request, so never interesting as "inclusive".
_ENTRY_POINTS = ("voicecache/__main__.py", "voicecache/cli.py")


def _path(frame: str) -> str:
    match = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    return match.group(1) if match else ""


def _layer(frame: str) -> str:
    path = _path(frame)
    for name, prefix in _LAYERS:
        if path.startswith(prefix) or f"/{prefix}" in path:
            return name
    return "other (stdlib, …)"


def profile(pid: int, seconds: float, directory: Path) -> dict[str, Any]:
    """py-spy samples of ``pid``: share of samples by layer (leaf frame) and top functions."""
    out = directory / "profile.txt"
    command = [h.tool("py-spy") or "py-spy", "record", "--pid", str(pid)]
    command += ["--duration", str(int(seconds))]
    command += ["--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=seconds + 30
    )
    if done.returncode != 0 or not out.exists():
        return {"error": (done.stderr or done.stdout).strip()[-300:]}
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        leaves[_short(leaf)] += count
        if len(frames) > 1:
            callers.setdefault(_short(leaf), Counter())[_short(frames[-2])] += count
        layers[_layer(leaf)] += count
        for name in {
            _short(f)
            for f in frames
            if _path(f).startswith("voicecache/") and not _path(f).startswith(_ENTRY_POINTS)
        }:
            inclusive[name] += count
    return {
        "samples": total,
        "layers": [(name, n / total) for name, n in layers.most_common()] if total else [],
        "top_self": [
            (name, n / total, (callers.get(name) or Counter({"": 0})).most_common(1)[0][0])
            for name, n in leaves.most_common(12)
        ]
        if total
        else [],
        "voicecache_inclusive": [(name, n / total) for name, n in inclusive.most_common(10)]
        if total
        else [],
    }


def _short(frame: str) -> str:
    """``handle (/x/site-packages/uvicorn/protocols/http/httptools_impl.py:123)`` →
    ``handle (uvicorn/protocols/http/httptools_impl.py)``."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path.lstrip('/')})"


# -- the run ------------------------------------------------------------------------------------


def _fetch(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def run(quick: bool = False, params: Params | None = None) -> dict[str, Any]:
    p = params or (QUICK if quick else FULL)
    missing = [tool for tool in ("nginx", "wrk") if not h.have(tool)]
    if missing:
        return {"skipped": f"{' and '.join(missing)} not installed (run `make bench-deps`)"}
    tiers = [t for t in p.tiers if t in h.available_tiers()]
    skipped_tiers = [t for t in p.tiers if t not in tiers]
    redis = None
    work = Path(tempfile.mkdtemp(prefix="bench-hitpath-"))
    os.chmod(work, 0o755)
    script = _post_script(work)
    runs: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    prof: dict[str, Any] = {}
    try:
        if "redis" in tiers:
            from tests.servers import RedisServer

            redis = RedisServer().start()
        for workers in p.workers:
            server_cores = h.SERVER_CORES if workers == 1 else h.ALL_CORES
            client_cores = h.CLIENT_CORES if workers == 1 else h.ALL_CORES
            for tier in tiers:
                env = {"VOICECACHE_TIERS": tier}
                if tier == "redis" and redis is not None:
                    redis.flushall()
                    env["VOICECACHE_REDIS_URL"] = redis.url
                gateway, base = h.start_gateway(env, workers=workers, cores=server_cores)
                # The same app under other ASGI servers, side by side (1 worker only).
                others = {
                    name: _start_other(name, env, server_cores)
                    for name in p.servers
                    if name != "voicecache"
                    and workers == 1
                    and (name == ASGI_ONLY or importlib.util.find_spec(name))
                }
                nginx = bare = None
                try:
                    status, headers, clip = _fetch(f"{base}/tts", json.dumps(TTS_BODY).encode())
                    if status != 200:
                        raise RuntimeError(f"POST /tts answered {status}: {clip[:200]!r}")
                    key = headers.get("x-cache-key") or headers.get("X-Cache-Key")
                    path = f"/v1/audio/{key}.wav"
                    www = work / "www"
                    (www / "v1" / "audio").mkdir(parents=True, exist_ok=True)
                    for folder in (www, www / "v1", www / "v1" / "audio"):
                        os.chmod(folder, 0o755)
                    target = www / path.lstrip("/")
                    target.write_bytes(clip)
                    os.chmod(target, 0o644)
                    nginx, nginx_url = start_nginx(www, workers, server_cores)
                    if workers == 1 and tier == "memory" and p.bare_asgi:
                        bare, bare_url = start_bare_asgi(target, server_cores)
                    # Warm every worker (each has its own memory tier), then check answers.
                    if workers > 1:
                        wrk(f"{base}/tts", 32, 1.0, script, client_cores)
                    get_status, _, get_body = _fetch(base + path)
                    n_status, _, n_body = _fetch(nginx_url + path)
                    checks[f"{tier}/{workers}"] = {
                        "clip_bytes": len(clip),
                        "get_status": get_status,
                        "get_same_bytes": get_body == clip,
                        "nginx_status": n_status,
                        "nginx_same_bytes": n_body == clip,
                    }
                    h.log(
                        f"hitpath: {workers} worker(s), tier {tier}: clip {len(clip):,} B, "
                        f"GET {get_status}, nginx {n_status}"
                    )
                    targets = [("nginx", "GET file", nginx_url + path, None, nginx.pid)]
                    if bare is not None:
                        targets.append((BARE, "GET file", bare_url + path, None, bare.pid))
                    servers = {"voicecache": (gateway, base)} | others
                    for name, (process, url) in servers.items():
                        if name != "voicecache":  # this one stored the line: its first hit
                            for _ in range(2):
                                _fetch(f"{url}/tts", json.dumps(TTS_BODY).encode())
                        if get_status == 200:
                            endpoint = "GET /v1/audio/{key}.wav"
                            targets.append((name, endpoint, url + path, None, process.pid))
                        targets.append((name, "POST /tts", f"{url}/tts", script, process.pid))
                    for round_no in range(p.rounds):
                        for connections in p.connections:
                            for server, endpoint, url, lua, pid in targets:
                                measured = wrk(url, connections, p.seconds, lua, client_cores, pid)
                                runs.append(
                                    {
                                        "workers": workers,
                                        "tier": tier,
                                        "connections": connections,
                                        "server": server,
                                        "endpoint": endpoint,
                                        "round": round_no,
                                        **measured,
                                    }
                                )
                    if workers == 1 and tier == "memory" and p.profile_seconds > 0:
                        if h.have("py-spy"):
                            h.log("hitpath: profiling POST /tts memory hits with py-spy")
                            load = subprocess.Popen(
                                h.pinned(
                                    [
                                        "wrk",
                                        "-t1",
                                        "-c32",
                                        f"-d{round(p.profile_seconds) + 2}s",
                                        "-s",
                                        str(script),
                                        f"{base}/tts",
                                    ],
                                    client_cores,
                                ),
                                stdout=subprocess.DEVNULL,
                            )
                            time.sleep(0.5)
                            prof = profile(gateway.pid, p.profile_seconds, work)
                            load.wait()
                        else:
                            prof = {"error": "py-spy not installed"}
                finally:
                    gateway.stop()
                    for process, _ in others.values():
                        process.stop()
                    if nginx is not None:
                        nginx.stop()
                    if bare is not None:
                        bare.stop()
    finally:
        if redis is not None:
            redis.close()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.__dict__.items()},
        "tiers_not_on_main": skipped_tiers,
        "checks": checks,
        "runs": runs,
        "summary": summarize(runs),
        "profile": prof,
    }


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over rounds per (workers, tier, connections, server, endpoint). The ratio to
    nginx is taken round by round (nginx measured just before, in the same round) and its
    median reported, so drift on a shared machine cancels out as far as it can."""
    groups: dict[tuple[int, str, int, str, str], list[dict[str, Any]]] = {}
    for run_ in runs:
        key = (
            run_["workers"],
            run_["tier"],
            run_["connections"],
            run_.get("server", "voicecache"),
            run_["endpoint"],
        )
        groups.setdefault(key, []).append(run_)
    rows = []
    for (workers, tier, connections, server, endpoint), group in groups.items():
        nginx = {
            g["round"]: g for g in groups.get((workers, tier, connections, "nginx", "GET file"), [])
        }
        ratios = [g["rps"] / nginx[g["round"]]["rps"] for g in group if g["round"] in nginx]
        cpu = [g["cpu_us_per_request"] for g in group if "cpu_us_per_request" in g]
        rows.append(
            {
                "workers": workers,
                "tier": tier,
                "connections": connections,
                "server": server,
                "endpoint": endpoint,
                "rps": h.median([g["rps"] for g in group]),
                "p50_ms": h.median([g["p50_ms"] for g in group]),
                "p99_ms": h.median([g["p99_ms"] for g in group]),
                "x_nginx": h.median(ratios),
                "x_nginx_range": [min(ratios), max(ratios)] if ratios else [],
                "cpu_us_per_request": h.median(cpu),
                "valid": all(g["valid"] for g in group),
                "non_2xx": sum(g["non_2xx"] for g in group),
                "rounds": len(group),
            }
        )
    return rows


def headline(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The memory-tier rows at 1 worker and 32 connections (the FACTS.md reference setup)."""
    return [
        r
        for r in result.get("summary", [])
        if r["workers"] == 1
        and r["connections"] == 32
        and r["tier"] == "memory"
        and r.get("server", "voicecache") in ("voicecache", "nginx")
    ]


# The goals of the cold-tiers issue (#15): 1 worker, uvicorn (`voicecache serve`), ratio to
# nginx at 32 connections, p99 in milliseconds.
GOALS: tuple[tuple[str, str, str, int, str, float], ...] = (
    ("memory, GET by key", "memory", "GET /v1/audio/{key}.wav", 32, "ratio", 0.6),
    ("memory, POST", "memory", "POST /tts", 32, "ratio", 0.5),
    ("disk, GET by key", "disk", "GET /v1/audio/{key}.wav", 32, "ratio", 0.3),
    ("Redis, GET by key", "redis", "GET /v1/audio/{key}.wav", 32, "ratio", 0.2),
    ("memory, 1 connection, GET", "memory", "GET /v1/audio/{key}.wav", 1, "p99", 1.0),
    ("memory, 1 connection, POST", "memory", "POST /tts", 1, "p99", 1.0),
    ("memory, 32 connections, GET", "memory", "GET /v1/audio/{key}.wav", 32, "p99", 5.0),
    ("memory, 32 connections, POST", "memory", "POST /tts", 32, "p99", 5.0),
)


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal beside what this run measured (1 worker, `voicecache serve`)."""
    rows = {
        (r["tier"], r["endpoint"], r["connections"]): r
        for r in result.get("summary", [])
        if r["workers"] == 1 and r.get("server", "voicecache") == "voicecache"
    }
    out = []
    for label, tier, endpoint, connections, kind, bound in GOALS:
        row = rows.get((tier, endpoint, connections))
        if row is None:
            continue
        if kind == "ratio":
            value, met = row["x_nginx"], row["x_nginx"] >= bound
            goal, shown = f"≥ {bound:g}× nginx", f"{value:.2f}× ({row['rps']:,.0f} req/s)"
        else:
            value, met = row["p99_ms"], row["p99_ms"] <= bound
            goal, shown = f"p99 ≤ {bound:g} ms", f"p99 {value:.2f} ms"
        out.append({"label": label, "goal": goal, "measured": shown, "met": met})
    return out


def _ceiling(result: dict[str, Any]) -> str:
    """The bare ASGI app beside the gateway's memory GET: the server's share of a hit's cost."""
    rows = {
        (r.get("server"), r["endpoint"], r["connections"]): r
        for r in result.get("summary", [])
        if r["workers"] == 1 and r["tier"] == "memory"
    }
    lines = []
    for connections in (32, 1):
        bare = rows.get((BARE, "GET file", connections))
        ours = rows.get(("voicecache", "GET /v1/audio/{key}.wav", connections))
        if bare is None or ours is None:
            continue
        own = (ours.get("cpu_us_per_request") or 0) - (bare.get("cpu_us_per_request") or 0)
        lines.append(
            f"- {connections} connection(s): the bare ASGI app reaches {bare['x_nginx']:.2f}× "
            f"nginx at {h.fmt(bare.get('cpu_us_per_request'), 0)} µs of CPU per request; the "
            f"gateway's memory GET {ours['x_nginx']:.2f}× at "
            f"{h.fmt(ours.get('cpu_us_per_request'), 0)} µs, so ≈ {own:.0f} µs per hit are "
            "voicecache's own work (security, fast lane, lookup, headers, metrics, access "
            "bookkeeping)."
        )
    if not lines:
        return ""
    return "The ceiling under uvicorn (memory tier, 1 worker):\n\n" + "\n".join(lines) + "\n"


def render_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Not measured: {result['skipped']}.\n"
    p = result["params"]
    out = [
        f"wrk, {p['seconds']:g} s per measurement, median of {p['rounds']} alternating "
        "round(s); ratio = voicecache req/s ÷ nginx req/s measured in the same round (median "
        "and range over rounds); CPU µs/req = the server's process tree's CPU time per request "
        "(steadier than req/s on a shared machine). Servers: `voicecache serve` (uvicorn, "
        "uvloop, httptools; plain memory hits answered in the HTTP protocol, below ASGI) and, "
        f"where marked, the same with that lane off (`{ASGI_ONLY}`: "
        "`VOICECACHE_WIRE_HITS=false`, every hit through ASGI) or the same app under granian; "
        "the bare ASGI app "
        "(`benchmarks/bare_asgi.py`) answers every request with the same bytes under the same "
        "uvicorn: the ceiling for any ASGI app. "
        "nginx: `sendfile on; tcp_nopush off; access_log off`.\n"
    ]
    if result["tiers_not_on_main"]:
        out.append(
            f"Tiers not measured (not on this commit): {', '.join(result['tiers_not_on_main'])}.\n"
        )
    rows = [
        [
            r["workers"],
            r["tier"] if r["endpoint"] != "GET file" else f"({r['tier']} round)",
            r["connections"],
            "nginx static file"
            if r.get("server") == "nginx"
            else "bare ASGI app, same bytes (uvicorn)"
            if r.get("server") == BARE
            else (
                r["endpoint"]
                if r.get("server", "voicecache") == "voicecache"
                else f"{r['endpoint']} ({r['server']})"
            ),
            r["rps"],
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['x_nginx']:.2f}"
            + (
                f" ({r['x_nginx_range'][0]:.2f}–{r['x_nginx_range'][1]:.2f})"
                if r.get("x_nginx_range") and r.get("server") != "nginx"
                else ""
            ),
            h.fmt(r.get("cpu_us_per_request"), 0),
            "ok" if r["valid"] else f"**INVALID: {r['non_2xx']} non-2xx**",
        ]
        for r in sorted(
            result["summary"],
            key=lambda r: (
                r["workers"],
                r["connections"],
                r["tier"],
                r.get("server", "voicecache") != "nginx",
                r["endpoint"],
                r.get("server", "voicecache"),
            ),
        )
    ]
    out.append(
        h.table(
            [
                "workers",
                "tier",
                "conns",
                "server / endpoint",
                "req/s",
                "p50 ms",
                "p99 ms",
                "× nginx (range)",
                "CPU µs/req",
                "check",
            ],
            rows,
        )
    )
    reached = goals(result)
    if reached:
        out.append("Goals (1 worker, `voicecache serve`, from the table above):\n")
        out.append(
            h.table(
                ["hits from", "goal", "measured", ""],
                [
                    [g["label"], g["goal"], g["measured"], "met" if g["met"] else "**not met**"]
                    for g in reached
                ],
            )
        )
    ceiling = _ceiling(result)
    if ceiling:
        out.append(ceiling)
    checks = result["checks"]
    if checks:
        out.append(
            "Same bytes checked before measuring: "
            + "; ".join(
                f"{name}: clip {c['clip_bytes']:,} B, GET {c['get_status']}"
                f"{' same bytes' if c['get_same_bytes'] else ''}, nginx {c['nginx_status']}"
                f"{' same bytes' if c['nginx_same_bytes'] else ''}"
                for name, c in checks.items()
            )
            + ".\n"
        )
    prof = result.get("profile") or {}
    if prof.get("error"):
        out.append(f"Profile: not taken ({prof['error']}).\n")
    elif prof.get("samples"):
        out.append(
            f"**Where a memory hit's time goes** (py-spy, {prof['samples']:,} samples of the "
            "1-worker gateway under `POST /tts` hits at 32 connections; share of busy samples by "
            "the layer of the innermost Python frame):\n"
        )
        out.append(h.table(["layer", "share"], [[n, f"{s:.0%}"] for n, s in prof["layers"]]))
        out.append("Top functions by self time:\n")
        out.append(
            h.table(
                ["function", "self", "mostly called from"],
                [[n, f"{s:.1%}", caller] for n, s, caller in prof["top_self"]],
            )
        )
        out.append(
            "Reading the profile: the self time of uvicorn's `RequestResponseCycle.send` is "
            "`transport.write` copying the body into the kernel (nginx hands the file to "
            "`sendfile`, with no copy through user space); `Runner.run` is uvloop's C event "
            "loop (epoll, socket reads); frames under FastAPI/Starlette on a fast-lane hit are "
            "the middleware the app wraps around the fast lane.\n"
        )
        out.append("voicecache functions by inclusive time:\n")
        out.append(
            h.table(
                ["function", "inclusive"],
                [[n, f"{s:.1%}"] for n, s in prof["voicecache_inclusive"]],
            )
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    return h.script_main(__doc__, run, render_markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
