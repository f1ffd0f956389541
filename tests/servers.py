"""Real servers on loopback ports for tests and benchmarks: Redis, a Redis Cluster, moto's S3
and any ASGI app under uvicorn in a background thread.

Nothing here imports pytest, so benchmarks and scripts can use the helpers too. Every helper is
a context manager with ``.url``, ``.port``, ``.start()`` (restart on the same port after
``.stop()``) and ``.stop()``; ``.close()`` (or leaving the ``with`` block) also removes temporary
directories. A ``weakref.finalize`` safety net kills forgotten Redis processes when the
interpreter exits, so a failing test run cannot leave ``redis-server`` daemons behind.

Example::

    with RedisServer() as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        ...
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import uvicorn
from starlette.types import ASGIApp

__all__ = [
    "LOOPBACK",
    "MotoS3Server",
    "RedisCluster",
    "RedisServer",
    "UvicornThread",
    "free_cluster_port",
    "free_port",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"

# How many times a helper retries with a fresh port when another process grabbed the port
# between free_port() and the server's bind (other test runs share this machine).
_PORT_RETRIES = 5


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is only free at the time of the call: a server started later may lose a race
    against another process, which is why the helpers below retry with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port(host: str = LOOPBACK) -> int:
    """A free port ``p`` for a Redis Cluster node: ``p <= 55535`` and ``p + 10000`` (the cluster
    bus port Redis derives from it) free too; the kernel's ephemeral range is usually higher.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 55_535)
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus,
            ):
                sock.bind((host, port))
                bus.bind((host, port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises:
        TimeoutError: nothing listened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.01)


class _ProcessSlot:
    """Holds the current child process of a server, so a finalizer can reach it without
    keeping the server object alive."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL and reap the process if it still runs."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def _finalize_redis(slot: _ProcessSlot, directory: Path | None) -> None:
    """Kill a forgotten redis-server and remove its directory (runs at GC or interpreter exit)."""
    slot.kill()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def _redis_binary(name: str) -> str:
    """Absolute path of ``redis-server``/``redis-cli``, or a RuntimeError that says what to do."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH: install it with `apt-get install -y redis-server` "
            "(Debian's package ships both redis-server and redis-cli), or run `make test`"
        )
    return path


class RedisServer:
    """One real ``redis-server`` daemon on a loopback port, with persistence turned off.

    Args:
        port: the port to use; by default a free one is picked (and re-picked if another
            process wins the race for it on the first start).
        maxmemory: ``maxmemory`` setting, e.g. ``"2mb"`` or a byte count, for eviction tests.
        policy: ``maxmemory-policy``, e.g. ``"allkeys-lru"``.
        extra_args: more ``--name value`` arguments passed to redis-server as they are.
        startup_timeout: seconds to wait for PING to answer.
        directory: working directory (dir, pidfile, log); a temp dir by default, removed by
            ``close()``.
        port_picker: picks the port when none is given (and again after a lost race).
    """

    host = LOOPBACK

    def __init__(
        self,
        port: int | None = None,
        *,
        maxmemory: str | int | None = None,
        policy: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        directory: Path | None = None,
        port_picker: Callable[[], int] = free_port,
    ) -> None:
        self._binary = _redis_binary("redis-server")
        self._port_picker = port_picker
        self._fixed_port = port is not None
        self.port = port if port is not None else port_picker()
        self.maxmemory = maxmemory
        self.policy = policy
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._owns_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="voicecache-redis-")) if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"
        self._slot = _ProcessSlot()
        # Never delete a directory the caller handed in; still kill a forgotten server.
        self._finalizer = weakref.finalize(
            self, _finalize_redis, self._slot, self.directory if self._owns_directory else None
        )

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (database 0)."""
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """pid of the running server, or None when it is not running."""
        process = self._slot.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.pid is not None

    def command_line(self) -> list[str]:
        """The redis-server command line this helper runs."""
        args = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            # A child process rather than a daemon: a daemon is re-parented to PID 1, which in
            # a container may reap it late, leaving <defunct> entries after the tests.
            "--daemonize",
            "no",
            "--pidfile",
            str(self.pidfile),
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.logfile),
        ]
        if self.maxmemory is not None:
            args += ["--maxmemory", str(self.maxmemory)]
        if self.policy is not None:
            args += ["--maxmemory-policy", self.policy]
        return args + list(self.extra_args)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server (again, on the same port) and wait until PING answers."""
        if self.is_running:
            return self
        for attempt in range(_PORT_RETRIES):
            try:
                self._start_once()
                return self
            except RuntimeError:
                # Only an auto-picked port on a never-started server may move: a restart must
                # keep its port, since clients hold the URL.
                bind_failed = "Address already in use" in self._log_tail()
                if self._fixed_port or not bind_failed or attempt == _PORT_RETRIES - 1:
                    raise
                self.port = self._port_picker()
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self) -> None:
        self.logfile.unlink(missing_ok=True)
        process = subprocess.Popen(
            self.command_line(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # everything goes to the logfile
        )
        self._slot.process = process
        deadline = time.monotonic() + self.startup_timeout
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1.0)
        try:
            while True:
                try:
                    if client.ping():
                        self._fixed_port = True  # from now on restarts reuse this port
                        return
                except redis.exceptions.RedisError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    self._slot.kill()
                    raise RuntimeError(
                        f"redis-server on port {self.port} did not answer PING "
                        f"(exit code {process.returncode}): {self._log_tail()}"
                    )
                time.sleep(0.01)
        finally:
            client.close()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM) and wait for it to exit; data is lost."""
        process, self._slot.process = self._slot.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests) and wait until it is gone."""
        self._slot.kill()

    def flushall(self) -> None:
        """Delete every key (between tests sharing one server)."""
        with redis.Redis(host=self.host, port=self.port) as client:
            client.flushall()

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r}, running={self.is_running})"


class RedisCluster:
    """A real Redis Cluster: ``masters`` (default 3) cluster-enabled servers, no replicas.

    The cluster is created with ``redis-cli --cluster create ... --cluster-replicas 0
    --cluster-yes`` and is ready once every node reports ``cluster_state:ok``. ``nodes`` gives
    the individual :class:`RedisServer` objects, so a fault test can ``kill()`` one master.
    ``stop()``/``start()`` restart every node on the same ports; the slot map survives in each
    node's ``nodes.conf``, the data does not.
    """

    host = LOOPBACK

    def __init__(
        self, masters: int = 3, *, node_timeout_ms: int = 2000, startup_timeout: float = 20.0
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self._cli = _redis_binary("redis-cli")
        self.startup_timeout = startup_timeout
        self.directory = Path(tempfile.mkdtemp(prefix="voicecache-redis-cluster-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.directory, True)
        cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
        ]
        self.nodes: list[RedisServer] = [
            RedisServer(
                extra_args=cluster_args,
                directory=self.directory / f"node{i}",
                port_picker=free_cluster_port,
            )
            for i in range(masters)
        ]
        self._created = False

    @property
    def ports(self) -> list[int]:
        """Ports of the masters, in creation order."""
        return [node.port for node in self.nodes]

    @property
    def port(self) -> int:
        """Port of the first master (the one ``url`` names)."""
        return self.nodes[0].port

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every master, for ``RedisCluster(startup_nodes=[ClusterNode(h, p)
        for h, p in cluster.startup_nodes])`` (sync and asyncio ClusterNode classes differ)."""
        return [(self.host, port) for port in self.ports]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<first master port>``; cluster clients discover the rest."""
        return f"redis://{self.host}:{self.port}"

    @property
    def urls(self) -> list[str]:
        """One URL per master."""
        return [node.url for node in self.nodes]

    def start(self) -> Self:
        """Start every node, create the cluster on first start, wait for ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                node.start()
            if not self._created:
                self._create()
                self._created = True
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        result = subprocess.run(
            [
                self._cli,
                "--cluster",
                "create",
                *(f"{self.host}:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {result.stdout[-2000:]} {result.stderr}"
            )

    def wait_ok(self, timeout: float | None = None) -> None:
        """Block until every running node reports ``cluster_state:ok``."""
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        for node in self.nodes:
            if not node.is_running:
                continue
            with redis.Redis(host=self.host, port=node.port, socket_timeout=1.0) as client:
                while True:
                    try:
                        info: Any = client.execute_command("CLUSTER", "INFO")
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        if "cluster_state:ok" in text:
                            break
                    except redis.exceptions.RedisError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {node.port} never reached state ok")
                    time.sleep(0.05)

    def flushall(self) -> None:
        """Delete every key on every running master."""
        for node in self.nodes:
            if node.is_running:
                node.flushall()

    def stop(self) -> None:
        """Stop every node (restartable with ``start()``)."""
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node and remove the cluster's temporary directory."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisCluster(ports={self.ports})"


class MotoS3Server:
    """moto's S3 (and every other moto service) in a background thread on a loopback port.

    State lives in memory: ``stop()``/``start()`` keeps the port but loses every bucket;
    ``reset()`` empties it without restarting. Credentials are dummies (moto accepts any).
    """

    host = LOOPBACK
    region = "us-east-1"
    access_key = "testing"
    secret_key = "testing"

    def __init__(self, port: int | None = None) -> None:
        # Port 0 lets the kernel pick inside bind(), so the first start cannot lose a race.
        self.port = port or 0
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``, for boto3/aioboto3 ``endpoint_url=``."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Same as ``endpoint_url``."""
        return self.endpoint_url

    @property
    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", **kwargs)`` and aioboto3 sessions."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def start(self) -> Self:
        """Start (or restart, on the same port) the server; returns once it listens."""
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer  # heavy import, only when needed

        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Stop the server and release its port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        # ThreadedMotoServer.stop() leaves the listening socket open, so a restart on the same
        # port would fail with EADDRINUSE; close it through the werkzeug server it wraps.
        inner = getattr(server, "_server", None)
        if inner is not None:
            inner.server_close()

    def client(self) -> Any:
        """A boto3 S3 client for this server (dummy credentials, us-east-1)."""
        import boto3

        return boto3.client("s3", **self.client_kwargs)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (us-east-1 needs no location constraint); return the name."""
        self.client().create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Delete every bucket and object (moto's ``/moto-api/reset``)."""
        import httpx

        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()

    def close(self) -> None:
        """Same as ``stop()`` (moto keeps no files)."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MotoS3Server(endpoint_url={self.endpoint_url!r})"


class _ThreadServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the main thread."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29 API, kept harmless
        pass


class UvicornThread:
    """Serve an ASGI app with uvicorn in a background thread, like encode/httpx's tests do.

    The listening socket is bound here, before uvicorn starts, so the port is known up front
    and cannot be lost to another process; ``stop()``/``start()`` rebinds the same port.

    Args:
        app: any ASGI application (FastAPI, Starlette, raw).
        port: 0 (default) picks a free port.
        http: uvicorn HTTP implementation, ``"h11"`` or ``"httptools"``.
        loop: ``"asyncio"`` or ``"uvloop"``.
        lifespan: ``"on"``, ``"off"`` or ``"auto"``.
        graceful_timeout: seconds uvicorn waits for in-flight requests on stop before
            cancelling them (keeps a hung request from blocking teardown).
        config_kwargs: anything else for ``uvicorn.Config``.
    """

    host = LOOPBACK

    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int = 0,
        http: str = "h11",
        loop: str = "asyncio",
        lifespan: str = "auto",
        log_level: str = "warning",
        graceful_timeout: int = 2,
        startup_timeout: float = 10.0,
        **config_kwargs: Any,
    ) -> None:
        self.app = app
        self.port = port
        self.startup_timeout = startup_timeout
        self._config_kwargs: dict[str, Any] = {
            "http": http,
            "loop": loop,
            "lifespan": lifespan,
            "log_level": log_level,
            "timeout_graceful_shutdown": graceful_timeout,
            **config_kwargs,
        }
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Start serving (again, on the same port) and wait for uvicorn's startup to finish."""
        if self.is_running:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR lets a restart rebind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, host=self.host, port=self.port, **self._config_kwargs)
        server = _ThreadServer(config)
        self._server = server
        self._error = None

        def run() -> None:
            try:
                # uvicorn closes the socket on shutdown.
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported to the caller of start()
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on {self.url}") from self._error
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, keep the port for ``start()``."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=30)
        if thread.is_alive():  # pragma: no cover - a request ignoring cancellation
            server.force_exit = True
            thread.join(timeout=5)

    def close(self) -> None:
        """Same as ``stop()``."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UvicornThread(url={self.url!r}, running={self.is_running})"
