"""Connect to NATS: fail fast and clearly on the first connect; once connected, never go deaf.

**The first connect fails fast**, with one exception of the ``bus.errors`` tree and a message a
person can act on, within about a second: ``ConfigError`` for a URL nats-py cannot speak
(``http://…``), ``Unavailable`` when nothing answers at the address, ``AuthError`` when the server
refuses the credentials (nats-py alone would retry a refused connect forever, logging "Authorization
Violation" in a loop). The last two are ``ConnectFailed`` too (``ConnectUnavailable``,
``ConnectAuthError``); a bad URL is ``BadUrl``, a ``ConfigError``.

**Once connected, the connection is reopened, whatever closes it.** nats-py gives up after 60
reconnect attempts by default (a minute-long outage would silently kill a long-running actor): we
reconnect forever. And nats-py *closes* — no reconnect — when the server sends an ``-ERR`` it does
not treat as transient (maximum payload or control line exceeded, slow consumer, an expired or
revoked authorization): ``Connection`` turns those into a reconnect like any lost socket, so the
subscriptions come back on their own. What is left — a connection closed anyway — is the
runtime's to handle (``actors.runtime``: the actor stops and the process exits non-zero).

**Credentials never reach a message or a log**: ``redact(url)`` replaces a URL's user info with
``***``, and every line this module logs or raises names the redacted URL only. Errors during
reconnects are logged at most once every ``LOG_EVERY_S`` per kind of error.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from bus.errors import AuthError, ConfigError, LlmError, Unavailable
from bus.server import url_greets

log = structlog.get_logger("llmbus.connection")

SCHEMES = ("nats", "tls", "ws", "wss")
LOG_EVERY_S = 10.0
RECONNECT_WAIT_S = 0.25
_AUTH = "authorization violation"
# -ERR lines after which the server keeps the connection open: nats-py handles them already
_KEEPS_OPEN = ("permissions violation", "stale connection")


class ConnectFailed(LlmError):
    """Marker base: the first connect failed (``ConnectUnavailable``, ``ConnectAuthError``) —
    catch it (and ``ConfigError`` for a bad URL or TLS file) to print one line and exit."""


class ConnectUnavailable(ConnectFailed, Unavailable):
    """No NATS server answers at the URL (kind ``unavailable``)."""


class ConnectAuthError(ConnectFailed, AuthError):
    """The NATS server refused the credentials, or none were given where it needs some (kind ``auth``)."""


class BadUrl(ConfigError):
    """The NATS URL cannot be used (a scheme nats-py cannot speak, no host)."""


@dataclass(frozen=True)
class ConnectOptions:
    """Auth and TLS for a NATS connection (all optional). Secrets are never shown by ``repr``."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None  # a .creds file (JWT + nkey seed), e.g. from `nsc`
    nkey_seed_file: str | None = None  # a file holding an nkey seed (SU…)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # replicas of every stream and KV bucket this connection creates (``bus.replicas``; 3 on a cluster)
    replicas: int = 1

    def __repr__(self) -> str:
        shown = {k: ("***" if k in ("password", "token") else v) for k, v in self.__dict__.items()
                 if v is not None and not (k == "replicas" and v == 1)}
        return f"ConnectOptions({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.token) if s]


def redact(url: str) -> str:
    """``url`` without its credentials: ``nats://user:pw@host:4222`` → ``nats://***@host:4222``."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
    except ValueError:
        return "<unparseable url>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def redact_text(text: str, url: str = "", options: ConnectOptions | None = None) -> str:
    """``text`` with the URL's credentials and the options' password and token cut out."""
    secrets = list(options.secrets()) if options else []
    if url and "@" in url:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        userinfo = parts.netloc.rsplit("@", 1)[0]
        secrets += [userinfo, *userinfo.split(":")]
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def check_url(url: str) -> None:
    """Raise ``BadUrl`` for a URL nats-py cannot connect to (before anything waits on it)."""
    for one in url.split(","):
        parts = urlsplit(one.strip() if "://" in one else f"nats://{one.strip()}")
        if parts.scheme not in SCHEMES:
            raise BadUrl(f"NATS URL {redact(one.strip())!r}: scheme {parts.scheme!r} is not one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
        try:
            parts.port
        except ValueError as exc:
            raise BadUrl(f"NATS URL {redact(one.strip())!r}: {exc}") from None
        if not parts.hostname:
            raise BadUrl(f"NATS URL {redact(one.strip())!r} has no host")


class Connection(NATS):
    """A nats-py client that reconnects where nats-py would close (see the module docstring)."""

    replicas = 1  # of the streams and buckets it creates (``ConnectOptions.replicas``)

    async def _process_err(self, err_msg: str) -> None:
        low = err_msg.lower()
        if self.is_connected and not any(k in low for k in _KEEPS_OPEN):
            err = NatsError("nats: " + err_msg.strip().strip("'"))
            self._err = err
            await self._error_cb(err)
            await self._process_op_err(err)  # a reconnect, as for a lost socket
            return
        await super()._process_err(err_msg)


class _Throttle:
    """Say each kind of message at most once every ``every_s``; count what was not said."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """The number held back since the last time (say it now), or None (stay quiet)."""
        t = time.monotonic()
        last, held = self._last.get(key, (float("-inf"), 0))
        if t - last >= self.every_s:
            self._last[key] = (t, 0)
            return held
        self._last[key] = (last, held + 1)
        return None


async def connect(
    url: str,
    *,
    name: str,
    options: ConnectOptions | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_closed: Callable[[], Awaitable[None]] | None = None,
    in_order: bool = False,
) -> NATS:
    """A connection to ``url`` (one server, or comma-separated seeds of a cluster: any that answers);
    raises ``ConfigError``, ``Unavailable`` or ``AuthError`` (all but the first as ``ConnectFailed``)
    when the first connect cannot be made — never hangs."""
    opts = options or ConnectOptions()
    check_url(url)
    shown = redact(url)
    seeds = seed_urls(url)
    # a plain TCP greeting check (the server speaks first): not for websockets. Of several seeds (a
    # cluster) one that answers is enough; the rest are where a reconnect goes. asyncio's thread, not
    # anyio's: a process that never started anyio (``llmbus trace``) is spared its start (~25 ms).
    if urlsplit(seeds[0]).scheme not in ("ws", "wss"):
        answering = [u for u in seeds if await asyncio.to_thread(url_greets, u)]
        if not answering:
            raise ConnectUnavailable(f"no NATS server answers at {redact(seeds[0]) if len(seeds) == 1 else shown}")
        seeds = answering + [u for u in seeds if u not in answering]
    throttle = _Throttle()
    connecting = True
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        if connecting:  # the first connect says what went wrong itself, once
            errors.append(exc)
            return
        text = redact_text(str(exc) or type(exc).__name__, url, opts)
        held = throttle.allow(text[:60])
        if held is not None:
            log.warning("nats_error", conn=name, url=shown, error=text, **({"repeated": held} if held else {}))

    async def on_disconnect() -> None:
        if not nc.is_closed and throttle.allow("disconnected") is not None:
            log.info("nats_disconnected", conn=name, url=shown)

    async def reconnected() -> None:
        log.info("nats_reconnected", conn=name, url=shown)
        if on_reconnect is not None:
            await on_reconnect()

    async def closed() -> None:
        if on_closed is not None:
            await on_closed()

    kwargs: dict = {}
    if opts.tls_ca_file or opts.tls_cert_file:
        try:
            ctx = ssl.create_default_context(cafile=opts.tls_ca_file)
            if opts.tls_cert_file:
                ctx.load_cert_chain(opts.tls_cert_file, opts.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS files for NATS: {exc}") from None
        kwargs["tls"] = ctx
    if opts.creds_file:
        kwargs["user_credentials"] = opts.creds_file
    if opts.nkey_seed_file:
        kwargs["nkeys_seed"] = opts.nkey_seed_file
    for path, what in ((opts.creds_file, "creds file"), (opts.nkey_seed_file, "nkey seed file")):
        if path:
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(f"NATS {what} {path!r}: {exc.strerror or exc}") from None
    nc = Connection()
    try:
        # One try and one retry (max_reconnect_attempts=1), then the error; forever once connected.
        await nc.connect(
            seeds,
            name=name,
            # several seeds: tried in the caller's order (``rotated``: actors spread over them), else
            # shuffled by nats-py, so many clients do not all land on the first seed
            dont_randomize=in_order,
            user=opts.user,
            password=opts.password,
            token=opts.token,
            max_reconnect_attempts=1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            connect_timeout=2.0,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=reconnected,
            closed_cb=closed,
            **kwargs,
        )
    except Exception as exc:
        if not nc.is_closed:
            try:
                await nc.close()
            except Exception:  # noqa: S110 — it never opened
                pass
        said = " ".join(str(e) for e in [*errors, exc] if str(e))
        if _AUTH in said.lower():
            raise ConnectAuthError(
                f"the NATS server at {shown} refused the credentials (Authorization Violation): "
                "check the token, user/password, creds or nkey file") from None
        reason = redact_text(str(errors[-1] if errors else exc) or type(exc).__name__, url, opts)
        raise ConnectUnavailable(f"cannot connect to NATS at {shown}: {reason}") from None
    connecting = False
    nc.options["max_reconnect_attempts"] = -1
    nc.replicas = max(1, opts.replicas)
    return nc


def seed_urls(url: str) -> list[str]:
    """The servers of a NATS URL: one, or several comma-separated seeds of a cluster."""
    return [u.strip() for u in url.split(",") if u.strip()]


def rotated(url: str, i: int) -> str:
    """``url``'s seeds starting at the ``i``-th (modulo their number): connection ``i`` of a process
    goes to its own seed first, so actors spread over the servers of a cluster."""
    seeds = seed_urls(url)
    if len(seeds) < 2:
        return url
    k = i % len(seeds)
    return ",".join(seeds[k:] + seeds[:k])
