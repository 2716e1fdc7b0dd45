"""What every ``llmbus`` command shares: the shared options, the consoles, settings, the event loop,
a client on the bus (or a private embedded stack), requests to service actors and failure output."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import anyio
import msgspec
import structlog
import typer
from rich.console import Console

from actors import settings as settings_mod
from bus import messages as m
from bus.errors import ConfigError
from bus.subjects import Service

out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

# Each option is declared once. --config, --nats-url and -v are options of `llmbus` itself (before the
# command); the commands that took them after their name still do, through the same alias.
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="config TOML (default: $LLMBUS_CONFIG or config/llmbus.toml)")]
UrlOpt = Annotated[Optional[str], typer.Option(
    "--nats-url", help="NATS server URL (default: $LLMBUS_NATS_URL, bus.nats_url, else nats://bus.host:bus.port)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the reply as JSON (for programs)")]
UvloopOpt = Annotated[bool, typer.Option("--uvloop/--no-uvloop", help="run on uvloop (if installed)")]


@dataclass(frozen=True)
class Options:
    """The options every command shares (the context object of ``llmbus``)."""

    config: Path | None = None
    nats_url: str | None = None
    verbose: bool = False

    def log(self, level: int = logging.WARNING) -> None:
        """Logs at ``level`` (debug with ``-v``), as structlog lines on stderr."""
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if self.verbose else level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )

    def settings(self) -> settings_mod.Settings:
        """The settings of ``--config``, with ``--nats-url`` as ``bus.nats_url``; exit 2 on a bad file."""
        try:
            settings = settings_mod.load(self.config)
        except ConfigError as exc:
            err.print(f"[red]config error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        if self.nats_url:
            bus = msgspec.structs.replace(settings.bus, nats_url=self.nats_url)
            settings = msgspec.structs.replace(settings, bus=bus)
        return settings


def options(ctx: typer.Context, config: Path | None = None, nats_url: str | None = None,
            verbose: bool = False) -> Options:
    """The shared options given before the command, overridden by those given after its name."""
    given = ctx.find_object(Options) or Options()
    return Options(config=config or given.config, nats_url=nats_url or given.nats_url,
                   verbose=verbose or given.verbose)


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


async def with_client(settings: settings_mod.Settings, work):
    """Run ``work(client)`` against the running bus, or — when nothing answers at the default URL
    and none was given — against a private embedded stack started for this one command."""
    from bus.client import Client
    from bus.server import url_greets

    url = settings.bus.url
    if not (settings.bus.nats_url or url_greets(url)):
        from actors.stack import embedded

        async with embedded(settings) as stack:
            async with Client(stack.url, root=settings.bus.root, name="llmbus-cli") as client:
                return await work(client)
    async with Client(url, root=settings.bus.root, name="llmbus-cli") as client:
        return await work(client)


def service(row: Service, request: msgspec.Struct, *, budget_ms: int = 2_000):
    """The work (for ``with_client``) of one request of the RPC table: its reply, or a Failure."""
    from bus.deadline import deadline_in

    async def call(client):
        return await client.rpc.service(row, request, deadline=deadline_in(budget_ms))

    return call


def one_request(settings: settings_mod.Settings, row: Service, request: msgspec.Struct):
    """Send ``request`` to a service actor: its reply, or a Failure."""
    return run_async(with_client, settings, service(row, request))


def print_json(reply: msgspec.Struct) -> None:
    sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")


def printed_as_json(report, json_out: bool, actor: str) -> bool:
    """Print ``report`` as JSON when asked; exit 1 on a Failure; True when nothing is left to print."""
    if json_out:
        print_json(report)
    if isinstance(report, m.Failure):
        if not json_out:
            hint = f" (is the {actor} actor running? `llmbus up` runs it)" if report.kind == m.UNAVAILABLE else ""
            err.print(f"[red]{report.kind}[/red]: {report.message}{hint}", highlight=False)
        raise typer.Exit(1)
    return json_out
