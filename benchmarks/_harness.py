"""Shared plumbing for the benchmark scripts: processes, CPU pinning, statistics, Markdown.

Servers (gateway, fake engine, nginx, Redis) run as real child processes on loopback, pinned to
core 0 with ``taskset`` while the load generator runs on core 1, so that on a 2-core machine
they do not fight for the same core (see FACTS.md: unpinned numbers swing by 30 %).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"

_TWO_CORES = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
SERVER_CORES: str | None = "0" if _TWO_CORES else None
CLIENT_CORES: str | None = "1" if _TWO_CORES else None
ALL_CORES: str | None = None


def log(message: str) -> None:
    """Progress line on stderr, with the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def tool(command: str) -> str | None:
    """Path of ``command``: on PATH, or installed beside this Python (the venv's py-spy)."""
    beside = Path(PYTHON).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(command)


def have(command: str) -> bool:
    return tool(command) is not None


def pinned(command: Sequence[str], cores: str | None) -> list[str]:
    """``command`` run on ``cores`` (``"0"``, ``"0,1"``) via taskset, or as it is."""
    if cores is None or not _TWO_CORES:
        return list(command)
    return ["taskset", "-c", cores, *command]


@contextlib.contextmanager
def on_cores(cores: str | None) -> Iterator[None]:
    """Pin this process (the in-process load generator) while the block runs."""
    if cores is None or not _TWO_CORES:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def raise_fd_limit() -> None:
    """Many concurrent sockets need many descriptors (the herd opens 10,000)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Process:
    """A child process with its output in a log file; stopped by :meth:`stop`."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    popen: subprocess.Popen[bytes] | None = None
    logfile: Path | None = None
    _log: IO[bytes] | None = None

    def start(self) -> Process:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"bench-{self.name}-", suffix=".log", delete=False
        )
        self._log = handle
        self.logfile = Path(handle.name)
        env = {**os.environ, **self.env}
        self.popen = subprocess.Popen(
            self.command, cwd=self.cwd, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log_text(self) -> str:
        if self.logfile is None or not self.logfile.exists():
            return ""
        return self.logfile.read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        if self.logfile is None or not self.logfile.exists():
            return ""
        text = self.logfile.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        """Wait until ``url`` answers anything over HTTP (or fail with the log tail). A server
        that dies is reported at once; the long default is for starts on a busy shared
        machine (a gateway pinned to a core other test runs load took over 30 s)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not answer {url}:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.logfile is not None:
            self.logfile.unlink(missing_ok=True)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fake_emotivoice(
    latency: float, cores: str | None = CLIENT_CORES, *, wait: bool = True
) -> tuple[Process, str]:
    """The fake EmotiVoice server (real HTTP, its wire format) answering after ``latency`` s.

    It runs beside the load generator, not the gateway: a real engine runs on its own GPU
    machine, so its synthesis and encoding must not take CPU from the gateway measured.

    ``wait=False`` returns at once (start a gateway meanwhile; call ``wait_http`` later)."""
    port = free_port()
    command = [PYTHON, "-m", "tests.fakes.emotivoice", "--port", str(port)]
    command += ["--latency", str(latency)]
    process = Process("emotivoice", pinned(command, cores)).start()
    url = f"http://{LOOPBACK}:{port}"
    if wait:
        process.wait_http(f"{url}/_fake/stats")
    return process, url


def start_gateway(
    env: Mapping[str, str],
    *,
    workers: int = 1,
    cores: str | None = SERVER_CORES,
    data_dir: Path | None = None,
    wait: bool = True,
    server: str = "voicecache",
) -> tuple[Process, str]:
    """``voicecache serve`` as a child process, configured by ``VOICECACHE_*`` variables
    (``wait=False``: return at once, call ``wait_http(url + "/healthz")`` later).

    ``server="granian"`` serves the same app factory with granian instead (uvloop, HTTP/1),
    for side-by-side comparisons of ASGI servers."""
    port = free_port()
    data = data_dir or Path(tempfile.mkdtemp(prefix="bench-voicecache-"))
    full_env = {
        "VOICECACHE_DATA_DIR": str(data),
        "VOICECACHE_LOG_LEVEL": "warning",
        **env,
    }
    if server == "granian":
        command = [PYTHON, "-m", "granian", "--interface", "asgi", "--factory", "--no-ws"]
        command += ["--http", "1", "--loop", "uvloop", "--log-level", "warning"]
        command += ["--host", LOOPBACK, "--port", str(port), "--workers", str(workers)]
        command += ["voicecache.http.server:app_from_environment"]
    else:
        command = [PYTHON, "-m", "voicecache", "serve", "--port", str(port)]
        command += ["--workers", str(workers)]
    process = Process("voicecache", pinned(command, cores), env=full_env).start()
    url = f"http://{LOOPBACK}:{port}"
    if wait:
        process.wait_http(f"{url}/healthz")
    return process, url


def http_json(url: str, data: Mapping[str, Any] | None = None, method: str = "GET") -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        url, data=body, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def fake_stats(url: str) -> dict[str, int]:
    return http_json(f"{url}/_fake/stats")  # type: ignore[no-any-return]


def fake_reset(url: str, latency: float) -> None:
    http_json(f"{url}/_fake/reset", {}, method="POST")
    http_json(f"{url}/_fake/controls", {"latency_s": latency}, method="POST")


def available_tiers() -> list[str]:
    from voicecache.bootstrap import TIER_BUILDERS

    return sorted(TIER_BUILDERS)


def available_engines() -> list[str]:
    from voicecache.engines import REGISTRY

    return REGISTRY.kinds()


# -- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (numpy's default 'linear')."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, p99, mean and max of latencies given in seconds, in milliseconds."""
    ms = [1000 * s for s in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "mean": statistics.fmean(ms),
        "max": max(ms),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- Markdown --------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- the machine ------------------------------------------------------------------------------


def _run_text(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return (
        (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""
    )


def machine() -> dict[str, str]:
    """CPU, cores, memory, OS and kernel of this machine."""
    cpu = ""
    with contextlib.suppress(OSError):
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1) if match else ""
    memory = ""
    with contextlib.suppress(OSError):
        match = re.search(r"MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text())
        memory = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else ""
    debian = ""
    with contextlib.suppress(OSError):
        debian = "Debian " + Path("/etc/debian_version").read_text().strip()
    return {
        "cpu": cpu or platform.processor(),
        "cores": str(os.cpu_count()),
        "memory": memory,
        "os": debian or platform.platform(),
        "kernel": platform.release(),
        "pinning": "taskset: servers on core 0, load generator (and the fake engine) on core 1"
        if _TWO_CORES
        else "none (fewer than 2 cores or no taskset)",
    }


def versions() -> dict[str, str]:
    """Versions of everything measured."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in (
        "voicecache",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "httpx",
        "redis",
        "numpy",
        "soundfile",
        "py-spy",
        "matplotlib",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["nginx"] = _run_text(["nginx", "-v"]).replace("nginx version: ", "")
    found["wrk"] = _run_text(["wrk", "-v"]).split(" [")[0]
    found["redis-server"] = _run_text(["redis-server", "--version"])
    return found


def commit() -> dict[str, str]:
    """The commit measured, and whether the working tree differed from it."""
    head = _run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    status = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "src",
            "benchmarks/*.py",
            "tests/fakes",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    subject = _run_text(["git", "-C", str(REPO), "log", "-1", "--format=%s"])
    return {"sha": head, "subject": subject, "code_dirty": "yes" if status else "no"}


def script_main(
    doc: str | None,
    run: Callable[[bool], Any],
    render_markdown: Callable[[Any], str],
    argv: Sequence[str] | None = None,
) -> int:
    """The command line every scenario script shares: `--quick` for a tiny run, `--out FILE`
    for the raw numbers as JSON; the Markdown section goes to stdout."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(render_markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0
