"""Connect to NATS: reconnect forever once connected; fail fast and clearly when nothing listens.

nats-py gives up after 60 reconnect attempts by default, which would silently kill a long-running
actor after a minute-long server outage, so we pass ``max_reconnect_attempts=-1``. With -1, nats-py
would also retry a first connect forever, so the first connect is preceded by a greeting check that
fails at once with ``Unavailable`` when no server answers.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog
from nats.aio.client import Client as NATS

from bus.errors import Unavailable
from bus.server import url_greets

log = structlog.get_logger("llmbus.connection")


@dataclass(frozen=True)
class ConnectOptions:
    """Auth and TLS for a NATS connection (all optional)."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


async def connect(
    url: str,
    *,
    name: str,
    options: ConnectOptions | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    opts = options or ConnectOptions()
    if not await anyio.to_thread.run_sync(url_greets, url):
        raise Unavailable(f"no NATS server answers at {url}")

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", conn=name, error=str(exc) or type(exc).__name__)

    async def on_disconnect() -> None:
        if not nc.is_closed:
            log.info("nats_disconnected", conn=name)

    async def reconnected() -> None:
        log.info("nats_reconnected", conn=name)
        if on_reconnect is not None:
            await on_reconnect()

    kwargs: dict = {}
    if opts.tls_ca_file or opts.tls_cert_file:
        ctx = ssl.create_default_context(cafile=opts.tls_ca_file)
        if opts.tls_cert_file:
            ctx.load_cert_chain(opts.tls_cert_file, opts.tls_key_file)
        kwargs["tls"] = ctx
    if opts.creds_file:
        kwargs["user_credentials"] = opts.creds_file
    nc = NATS()
    await nc.connect(
        url,
        name=name,
        user=opts.user,
        password=opts.password,
        token=opts.token,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=reconnected,
        **kwargs,
    )
    return nc
