"""The gateway actor: uvicorn serving the Starlette app (``app.py``) inside the actor's task group.

It serves no bus endpoint of its own: it publishes asks like any client (``bus.client.Client`` on
the actor's connection). Its background jobs, started in order and each ready before the next:
the key mirror (``<root>_keys`` in KV), the dashboard's bus watch (when ``dashboard.py`` is there
and ``gateway.dashboard`` is on), then the HTTP server — ready once its socket listens
(``actor.url`` is then ``http://host:port``; port 0 picks a free one).

Without any key (config or KV) it refuses to listen on a non-loopback address (``ConfigError``).
uvicorn's own signal handlers and lifespan are off: the process's SIGINT/SIGTERM stop the actors
(``actors.runtime.stop_on_signal``), and stopping this one closes the listener and gives streams in
flight ``stop_grace_s`` to end.
"""

from __future__ import annotations

import contextlib
import socket

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus

from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in
from bus.errors import ConfigError
from bus.subjects import COST_BUDGET_SET
from actors.gateway.config import DEFAULT_LISTEN, address, is_loopback
from actors.gateway.keys import KeyRing
from actors.runtime import Actor
from actors.settings import Settings

log = structlog.get_logger("llmbus.gateway")


def dashboard_class():
    """D2's ``Dashboard`` when ``actors/gateway/dashboard.py`` is there, else None."""
    try:
        from actors.gateway.dashboard import Dashboard
    except ModuleNotFoundError as exc:
        if exc.name != "actors.gateway.dashboard":
            raise
        return None
    return Dashboard


def http_protocol() -> str:
    """httptools when installed (measured faster, see README), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def listen_on(host: str, port: int) -> socket.socket:
    """A listening TCP socket made with ``IPPROTO_TCP`` as its protocol: asyncio sets TCP_NODELAY
    only on sockets that say so, and the connections accepted from it inherit it. Without
    TCP_NODELAY a response written as headers then body waits for the client's delayed ACK
    (measured: 40+ ms a request, instead of ~1 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class GatewayActor(Actor):
    kind = "gateway"
    description = "HTTP gateway: OpenAI-compatible API, native asks, dashboard"

    def __init__(self, *, settings: Settings, listen: str | None = None, protocol: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.protocol = protocol or http_protocol()  # uvicorn's HTTP parser: "httptools" or "h11"
        self.host, self.port = address(listen or settings.gateway.listen or DEFAULT_LISTEN)
        self.client: Client | None = None
        self.keys: KeyRing | None = None
        self.gateway = None
        self.dashboard = None
        self.server = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def endpoints(self):
        return []

    async def setup(self) -> None:
        self.client = Client(nc=self.nc, root=self.subjects.root, name=self.micro_name)
        self.client.rpc = self.rpc  # the actor's own reply subscription
        self.keys = KeyRing(self.nc, self.subjects, self.settings.gateway)

    def background(self):
        jobs = [self.keys.run]
        cls = dashboard_class() if self.settings.gateway.dashboard else None
        if cls is not None:
            jobs.append(self._dashboard(cls))
        return [*jobs, self._budgets, self._http]

    def _dashboard(self, cls):
        async def run(*, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
            self.dashboard = cls(self.nc, self.subjects, self.settings, guard=self._guard)
            await self.dashboard.run(task_status=task_status)

        return run

    async def _guard(self, request):
        if self.gateway is None:  # no request is served before the app exists; never open by default
            from actors.gateway.errors import error

            return error(503, "the gateway is starting", "server_error", m.UNAVAILABLE, retry_after_s=1.0)
        return await self.gateway.guard(request)

    async def _budgets(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """The daily budgets of config keys, set with the cost actor once at start (best effort)."""
        task_status.started()
        for k in self.settings.gateway.keys:
            if k.budget_usd_day is None:
                continue
            got = await self.rpc.service(COST_BUDGET_SET, m.BudgetSet(scope="user", name=k.user, period="day",
                                                                      limit_usd=k.budget_usd_day),
                                         deadline=deadline_in(5_000))
            if type(got) is m.Failure:
                log.warning("key_budget_not_set", user=k.user, kind=got.kind, error=got.message)

    async def _ready(self) -> str | None:
        if not self.nc.is_connected:
            return "not connected to NATS"
        try:
            await self.nc.request(f"$SRV.PING.{self.subjects.root}-router", b"", timeout=0.5)
        except Exception:
            return "no router answers"
        return None

    async def _http(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        from actors.gateway.app import Gateway

        self.keys.open_without_keys = is_loopback(self.host)
        if not is_loopback(self.host) and not self.keys.any():
            self.stop()  # closing the connection now is ours, not a lost one
            raise ConfigError(f"the gateway refuses to listen on {self.host} without API keys: create one "
                              "(llmbus keys create --user U --tier T) or add [[gateway.keys]], or listen on loopback")
        extra = self.dashboard.routes() if self.dashboard is not None else []
        self.gateway = Gateway(self.settings, self.client, self.keys, ready=self._ready, extra_routes=extra)
        sock = listen_on(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.gateway.app(), lifespan="off", log_config=None, log_level="warning",
                                access_log=False, http=self.protocol, server_header=False, proxy_headers=False,
                                timeout_graceful_shutdown=max(1, int(self.stop_grace_s)))
        config.load()
        server = self.server = _Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
            if server.should_exit:
                raise OSError(f"the gateway could not listen on {self.url}")
            log.info("gateway_listening", url=self.url)
            task_status.started()
            await server.main_loop()
        finally:
            with anyio.CancelScope(shield=True):
                server.should_exit = True
                if server.started:
                    with anyio.move_on_after(self.stop_grace_s + 1):
                        await server.shutdown(sockets=[sock])
                sock.close()
                await self.gateway.asks.close()



class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers (the process's own stop the actors)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield
