"""What every ``llmbus`` command shares: the shared options, the output rules, settings, the event
loop, where the fleet is, requests to service actors, and failure output.

Output: answers and ``--json`` go to stdout byte for byte (no wrapping, no markup); tables, progress
and diagnostics go to stderr through rich, coloured only on a terminal (``NO_COLOR`` is respected),
with every user or provider text escaped and emoji codes off (``tier:free:month`` stays as it is).

Where the fleet is: commands that read or change fleet state never start a private stack; with
nothing reachable they print one line naming the URL tried and exit 1 (``--json``: a Failure on
stdout). Only ``ask`` may run on a private stack, and says so on stderr.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional
from urllib.parse import urlparse

import anyio
import msgspec
import structlog
from rich.console import Console

from actors import settings as settings_mod
from bus import messages as m
from bus.errors import ConfigError, LlmError
from bus.subjects import Service

if TYPE_CHECKING:
    import typer


def _console(stream) -> Console:
    tty = stream.isatty()
    # Off a terminal nothing is wrapped (a log or a pipe keeps each line whole).
    return Console(file=stream, emoji=False, highlight=False, width=None if tty else 10_000)


err = _console(sys.stderr)
out = err  # tables and reports are for a person: stderr (programs read --json on stdout)


def group(**kwargs: Any) -> typer.Typer:
    """A command group: plain help (no rich markup, so ``[providers.<name>]`` stays), ``-h`` too."""
    import typer

    return typer.Typer(rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                       **kwargs)


# Each option is declared once. --config, --nats-url and -v are options of `llmbus` itself (before the
# command); the commands that took them after their name still do, through the same alias. They are
# made at first use (``__getattr__`` below): ``llmbus trace`` reads its options without typer, whose
# import (~15 ms here) it does not pay.
def _typer_options() -> dict[str, Any]:
    import typer

    def auth(flag: str):
        return Annotated[Optional[str], typer.Option(flag, help=AUTH_FLAGS[flag][1])]

    made = {
        "ConfigOpt": Annotated[Optional[Path], typer.Option(
            "--config", "-c", help="config TOML (default: $LLMBUS_CONFIG or config/llmbus.toml)")],
        "UrlOpt": Annotated[Optional[str], typer.Option(
            "--nats-url", help="NATS server URL (default: $LLMBUS_NATS_URL, bus.nats_url, else nats://bus.host:bus.port)")],
        "VerboseOpt": Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")],
        "JsonOpt": Annotated[bool, typer.Option("--json", help="print the reply as JSON on stdout (for programs)")],
        "YesOpt": Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")],
        "UvloopOpt": Annotated[bool, typer.Option("--uvloop/--no-uvloop", help="run on uvloop (if installed)")],
    }
    made.update(zip(AUTH_OPTS, map(auth, AUTH_FLAGS)))
    return made


def __getattr__(name: str) -> Any:
    """``ConfigOpt``, ``JsonOpt``, ``CredsOpt`` …: the typer option types, made at first use."""
    if name in OPTION_TYPES:
        globals().update(_typer_options())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def typer_exit(code: int) -> typer.Exit:
    """``typer.Exit(code)``, typer imported only then."""
    import typer

    return typer.Exit(code)


NATS_SCHEMES = ("nats", "tls", "ws", "wss")

# NATS auth and TLS: options of `llmbus` itself, each overriding its ``[bus.auth]`` key; given after
# a command's name they are moved before it (``auth_first``), so every command takes them. Secrets
# never on the command line: the token and the password come from the variables these name.
AUTH_FLAGS = {
    "--creds": ("creds_file", "a NATS .creds file (JWT + nkey seed); [bus.auth] creds_file"),
    "--nkey": ("nkey_seed_file", "a file holding an nkey seed (SU…); [bus.auth] nkey_seed_file"),
    "--token-env": ("token_env", "the environment variable holding the NATS token; [bus.auth] token_env "
                                 "(default: LLMBUS_NATS_TOKEN when it is set)"),
    "--nats-user": ("user", "the NATS user (its password: --password-env); [bus.auth] user"),
    "--password-env": ("password_env", "the environment variable holding the NATS password; [bus.auth] password_env"),
    "--tls-ca": ("tls_ca_file", "a CA file to verify the NATS server; [bus.auth] tls_ca_file"),
    "--tls-cert": ("tls_cert_file", "a client certificate for NATS; [bus.auth] tls_cert_file"),
    "--tls-key": ("tls_key_file", "the client certificate's key; [bus.auth] tls_key_file"),
}


AUTH_OPTS = ("CredsOpt", "NkeyOpt", "TokenEnvOpt", "NatsUserOpt", "PasswordEnvOpt", "TlsCaOpt", "TlsCertOpt", "TlsKeyOpt")
OPTION_TYPES = frozenset({"ConfigOpt", "UrlOpt", "VerboseOpt", "JsonOpt", "YesOpt", "UvloopOpt", *AUTH_OPTS})


def auth_first(argv: list[str]) -> list[str]:
    """``argv`` with the auth options (and their values) given after the command moved to the front,
    where ``llmbus`` takes them; nothing after ``--`` is touched."""
    front, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        flag = arg.split("=", 1)[0]
        if flag in AUTH_FLAGS:
            took = 1 if "=" in arg else 2
            front += argv[i:i + took]
            i += took
            continue
        rest.append(arg)
        i += 1
    return front + rest


@dataclass(frozen=True)
class Options:
    """The options every command shares (the context object of ``llmbus``)."""

    config: Path | None = None
    nats_url: str | None = None
    verbose: bool = False
    auth: tuple[tuple[str, str], ...] = ()  # (key of [bus.auth], value) from the auth options

    def log(self, level: int = logging.WARNING) -> None:
        """Logs at ``level`` (debug with ``-v``), as structlog lines on stderr."""
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if self.verbose else level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )

    def settings(self, *, check: bool = True) -> settings_mod.Settings:
        """The settings of ``--config``, with ``--nats-url`` as ``bus.nats_url``; exit 2 on a bad
        file or a URL that is not a NATS URL (``check=False``: see ``actors.settings.load``)."""
        try:
            settings = settings_mod.load(self.config, check=check)
        except ConfigError as exc:
            err.print(f"config error: {exc}", markup=False)
            raise typer_exit(2) from None
        if self.nats_url:
            bus = msgspec.structs.replace(settings.bus, nats_url=self.nats_url)
            settings = msgspec.structs.replace(settings, bus=bus)
        auth = settings.bus.auth
        if self.auth:
            auth = msgspec.structs.replace(auth, **dict(self.auth))
        if auth.token_env is None and not (auth.user or auth.creds_file or auth.nkey_seed_file) and \
                os.environ.get(settings_mod.TOKEN_ENV):
            auth = msgspec.structs.replace(auth, token_env=settings_mod.TOKEN_ENV)
        if auth != settings.bus.auth:
            settings = msgspec.structs.replace(settings, bus=msgspec.structs.replace(settings.bus, auth=auth))
        try:
            settings.bus.connect_options()  # a named variable that is not set: say so now
        except ConfigError as exc:
            err.print(f"config error: {exc}", markup=False)
            raise typer_exit(2) from None
        if settings.bus.nats_url and (problem := url_problem(settings.bus.nats_url)):
            from bus.connection import redact

            err.print(f"{url_origin(self)} {redact(settings.bus.nats_url)!r}: {problem}", markup=False)
            raise typer_exit(2)
        return settings


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a NATS URL, or comma-separated seeds of a cluster (None when it is)."""
    for one in (u.strip() for u in url.split(",") if u.strip()):
        parsed = urlparse(one if "://" in one else f"nats://{one}")
        if parsed.scheme not in NATS_SCHEMES:
            return f"not a NATS URL (scheme {parsed.scheme}://; use nats://host:port)"
        try:
            parsed.port
        except ValueError:
            return "the port is not a number"
    return None


def url_origin(opts: Options | None) -> str:
    """Which setting gave the NATS URL: ``--nats-url``, ``$LLMBUS_NATS_URL`` or the config."""
    if opts is not None and opts.nats_url:
        return "--nats-url"
    if os.environ.get("LLMBUS_NATS_URL"):
        return "$LLMBUS_NATS_URL"
    return "bus.nats_url"


def options(ctx: typer.Context, config: Path | None = None, nats_url: str | None = None,
            verbose: bool = False) -> Options:
    """The shared options given before the command, overridden by those given after its name."""
    given = ctx.find_object(Options) or Options()
    return Options(config=config or given.config, nats_url=nats_url or given.nats_url,
                   verbose=verbose or given.verbose, auth=given.auth)


def load_settings(ctx: typer.Context, config: Path | None = None, nats_url: str | None = None, *,
                  verbose: bool = False, level: int = logging.WARNING) -> settings_mod.Settings:
    """Set up the logs and load the settings of a command, from the shared options and its own."""
    opts = options(ctx, config, nats_url, verbose)
    opts.log(level)
    return opts.settings()


def run_async(fn, *args, uvloop: bool = False):
    loop_options = {"use_uvloop": True} if uvloop and _has_uvloop() else {}
    return anyio.run(fn, *args, backend="asyncio", backend_options=loop_options)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class NoFleet(Exception):
    """Nothing answers at the fleet's URL (or the connection failed): one line for a person."""

    def __init__(self, url: str, why: str = "", *, auth: bool = False) -> None:
        from bus.connection import redact

        super().__init__(redact(url))
        self.url = redact(url)  # a person reads it: no credentials
        self.why = why
        self.auth = auth

    def failure(self) -> m.Failure:
        if self.auth:  # the fleet is there; the credentials are not right
            return m.Failure(kind=m.AUTH, message=f"{self.why}; `llmbus up --auth` prints how to connect")
        why = f" ({self.why})" if self.why else ""
        return m.Failure(kind=m.UNAVAILABLE, message=f"no llmbus fleet answers at {self.url}{why}; start one "
                         "with `llmbus up`, or point --nats-url / $LLMBUS_NATS_URL at a running one")


async def with_client(settings: settings_mod.Settings, work, *, private: bool = False, plain: bool = False):
    """Run ``work(client)`` against the fleet at ``settings.bus.url``; raise NoFleet when nothing
    answers there. With ``private`` (``ask`` only), no URL given and nothing answering at the default
    one, run it on a private embedded stack instead, and say so on stderr. ``plain``: run by
    ``asyncio.run``, no anyio cancel scope around it (see ``on_fleet``)."""
    from bus.client import Client
    from bus.connection import ConnectAuthError
    from bus.server import url_greets

    url = settings.bus.url
    auth = settings.bus.connect_options()
    if not await asyncio.to_thread(url_greets, url):  # not anyio's: its start costs ~25 ms (``plain``)
        if not (private and not settings.bus.nats_url):
            raise NoFleet(url)
        from actors.stack import embedded

        err.print(f"no fleet at {url}: this ask runs on a private stack (cache in {settings.cache.path()}); "
                  "`llmbus up` starts one that stays", markup=False)
        async with embedded(settings) as stack:
            async with Client(stack.url, root=settings.bus.root, name="llmbus-cli", options=auth) as client:
                return await work(client)
    try:
        client = await Client(url, root=settings.bus.root, name="llmbus-cli", options=auth).__aenter__()
    except ConnectAuthError as exc:
        raise NoFleet(url, exc.message, auth=True) from None
    except (LlmError, OSError, TimeoutError) as exc:
        raise NoFleet(url, str(exc) or type(exc).__name__) from None
    try:
        return await work(client)
    finally:
        if plain:  # nothing cancels it again while it closes (asyncio's cancellation is edge-triggered)
            await client.__aexit__(None, None, None)
        else:
            with anyio.CancelScope(shield=True):
                await client.__aexit__(None, None, None)


def on_fleet(settings: settings_mod.Settings, work, *, json_out: bool = False, private: bool = False,
             plain: bool = False):
    """``work(client)`` on the fleet, from synchronous code: its result, or (nothing reachable) one
    line on stderr — a Failure on stdout with ``--json`` — and exit 1. ``plain``: on ``asyncio.run``
    instead of ``anyio.run``, for a ``work`` that uses no anyio (``trace``: anyio's start, ~25 ms
    here, is a tenth of the command)."""
    try:
        if plain:
            return asyncio.run(with_client(settings, work, private=private, plain=True))
        return run_async(lambda: with_client(settings, work, private=private))
    except ConfigError as exc:  # a bad URL (BadUrl) or TLS, creds or nkey file
        err.print(f"config error: {exc}", markup=False)
        raise typer_exit(2) from None
    except NoFleet as exc:
        failure = exc.failure()
        if json_out:
            print_json(failure)
        else:
            err.print(f"{failure.kind}: {failure.message}", markup=False)
        raise typer_exit(1) from None


def service(row: Service, request: msgspec.Struct, *, budget_ms: int = 2_000, **names: str):
    """The work (for ``with_client``) of one request of the RPC table: its reply, or a Failure."""
    from bus.deadline import deadline_in

    async def call(client):
        return await client.rpc.service(row, request, deadline=deadline_in(budget_ms), **names)

    return call


def one_request(settings: settings_mod.Settings, row: Service, request: msgspec.Struct, *, json_out: bool = False):
    """Send ``request`` to a service actor of the fleet: its reply, or a Failure."""
    return on_fleet(settings, service(row, request), json_out=json_out)


def write_out(text: str) -> None:
    """``text`` on stdout exactly as it is (a newline added only when it has none at its end)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# Fields holding unix times: --json puts an ISO-8601 UTC twin beside each (``<name>_iso``).
TIME_FIELDS = frozenset({"at", "last_success", "last_failure", "open_until", "changed_at", "stored_at",
                         "expires_at", "started_at", "since_at"})


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_iso_times(value: Any) -> Any:
    """``value`` (plain JSON data) with ``<name>_iso`` beside every unix-time field that is set."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            result[key] = with_iso_times(item)
            if key in TIME_FIELDS and isinstance(item, (int, float)) and not isinstance(item, bool) and item > 0:
                result[f"{key}_iso"] = iso(item)
        return result
    if isinstance(value, list):
        return [with_iso_times(item) for item in value]
    return value


def print_json(reply: Any) -> None:
    """One JSON document on stdout: a wire Struct (with ISO twins of its times) or plain data."""
    data = with_iso_times(msgspec.to_builtins(reply))
    sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
    sys.stdout.flush()


def exit_code(failure: m.Failure) -> int:
    """2 for a request the fleet refused as bad (bad usage), 1 for every other Failure."""
    return 2 if failure.kind == m.BAD_REQUEST else 1


def print_failure(failure: m.Failure, hint: str = "") -> None:
    err.print(f"{failure.kind}: {failure.message}" + (f" ({hint})" if hint else ""), markup=False)


def printed_as_json(report, json_out: bool, actor: str) -> bool:
    """Print ``report`` as JSON when asked; exit non-zero on a Failure; True when nothing is left to print."""
    if json_out:
        print_json(report)
    if isinstance(report, m.Failure):
        if not json_out:
            hint = f"is the {actor} actor running? `llmbus up` runs it" if report.kind == m.UNAVAILABLE else ""
            print_failure(report, hint)
        raise typer_exit(exit_code(report))
    return json_out


def confirm(question: str, yes: bool) -> None:
    """Go on only when ``--yes`` was given or the person at the terminal says yes; else exit 1."""
    if yes:
        return
    if not sys.stdin.isatty():
        err.print(f"{question} — refusing without --yes (stdin is not a terminal)", markup=False)
        raise typer_exit(1)
    import typer

    if not typer.confirm(question, default=False, err=True):
        raise typer_exit(1)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
