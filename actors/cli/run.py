"""``llmbus up``, ``llmbus actor``, ``llmbus demo``: run the stack, one actor, or the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import anyio
import typer
from rich.table import Table

from actors import settings as settings_mod
from actors.cli.common import ConfigOpt, UrlOpt, UvloopOpt, VerboseOpt, err, load_settings, out, run_async
from bus.errors import ConfigError, LlmError

app = typer.Typer()


@app.command()
def up(
    ctx: typer.Context,
    config: ConfigOpt = None,
    port: Annotated[Optional[int], typer.Option(help="port of the embedded nats-server (default bus.port)")] = None,
    store: Annotated[Optional[Path], typer.Option(help="JetStream store dir (default bus.store_dir)")] = None,
    uvloop: UvloopOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run every actor in this process; with no bus.nats_url, start nats-server too. Ctrl-C stops."""
    settings = load_settings(ctx, config, verbose=verbose, level=logging.INFO)
    from actors.runtime import stop_on_signal
    from actors.stack import build_actors, embedded

    async def main() -> None:
        if settings.bus.nats_url:
            from actors.runtime import run_actors

            actors = build_actors(settings)
            async with anyio.create_task_group() as tg:
                await tg.start(run_actors, actors, settings.bus.url)
                _announce(settings.bus.url, actors, settings, embedded_server=False)
                await stop_on_signal(actors)
            return
        async with embedded(
            settings,
            port=settings.bus.port if port is None else port,
            store=store or settings.bus.store_dir,
            reuse=True,
        ) as stack:
            _announce(stack.url, stack.actors, settings, embedded_server=stack.server is not None)
            await stop_on_signal(stack.actors)

    try:
        run_async(main, uvloop=uvloop)
    except LlmError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    err.print("[green]stopped cleanly[/green]")


def _announce(url: str, actors, settings: settings_mod.Settings, *, embedded_server: bool) -> None:
    from actors.stack import unconfigured

    where = "embedded nats-server" if embedded_server else "the NATS server already running at"
    err.print(f"[bold green]llmbus up[/bold green] on {where} [cyan]{url}[/cyan] — "
              f"{len(actors)} actors: {', '.join(a.name for a in actors)}. Ctrl-C stops.", highlight=False)
    missing = unconfigured(settings)
    if missing:
        err.print("[yellow]not configured (no API key):[/yellow] "
                  + ", ".join(f"{name} (set {env})" for name, env in missing.items()), highlight=False)
    err.print(f"failover order: {' → '.join(settings.provider_order())}", highlight=False)


@app.command()
def actor(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="router | provider.<name>")],
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
    uvloop: UvloopOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run one actor in this process, against a NATS server that is already running."""
    settings = load_settings(ctx, config, nats_url, verbose=verbose, level=logging.INFO)
    from actors.runtime import stop_on_signal
    from actors.stack import actor_names, build_actor

    try:
        one = build_actor(name, settings)
    except KeyError:
        err.print(f"[red]unknown actor {name!r}[/red]; this config has: {', '.join(actor_names(settings))}", highlight=False)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(one.run, settings.bus.url)
            await stop_on_signal([one])

    try:
        run_async(main, uvloop=uvloop)
    except LlmError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


@app.command()
def demo(ctx: typer.Context, config: ConfigOpt = None) -> None:
    """Start the embedded stack, send asks through every strategy, print what happened, stop."""
    settings = load_settings(ctx, config)
    from actors.demo import run_demo

    rows = anyio.run(run_demo, settings)
    table = Table(title="llmbus demo — embedded nats-server, mock providers")
    for col in ("ask", "strategy", "provider path", "ms", "outcome", "cost USD"):
        table.add_column(col)
    for row in rows:
        style = "green" if row.outcome == "answer" else "yellow"
        cost = "—" if row.cost_usd is None else f"{row.cost_usd:.7f}"
        table.add_row(row.label, row.strategy, row.path, f"{row.ms:.1f}", f"[{style}]{row.outcome}[/{style}]", cost)
    out.print(table)
