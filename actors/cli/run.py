"""``llmbus up``, ``llmbus actor``, ``llmbus demo``: run the stack, one actor, or the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import anyio
import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors import settings as settings_mod
from actors.cli.common import (ConfigOpt, UrlOpt, UvloopOpt, VerboseOpt, err, group, load_settings, options, out,
                               run_async, url_origin)
from bus.errors import ConfigError, LlmError

app = group()
HttpOpt = Annotated[Optional[str], typer.Option(
    "--http", metavar="HOST:PORT", help="run the HTTP gateway there (OpenAI-compatible API and dashboard); "
    ":PORT is 127.0.0.1; another address needs API keys (llmbus keys create)")]

MetricsPortOpt = Annotated[Optional[int], typer.Option(
    "--metrics-port", min=0, max=65535,
    help="serve Prometheus metrics on this port (default [metrics] port; 0: none)")]


def observe(settings: settings_mod.Settings, metrics_port: int | None) -> str:
    """Start this process's metrics endpoint and span export as configured; what the banner says."""
    port = settings.metrics.port if metrics_port is None else metrics_port
    said = "off (--metrics-port or [metrics] port)"
    if port:
        from actors import metrics

        said = f"http://{settings.metrics.host}:{metrics.serve(port, settings.metrics.host)}/metrics"
    from actors import tracing

    tracing.configure(settings.tracing)
    return said


@app.command()
def up(
    ctx: typer.Context,
    config: ConfigOpt = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="run nats-server on this port (default bus.port); wins over a NATS URL")] = None,
    store: Annotated[Optional[Path], typer.Option(help="JetStream store dir (default bus.store_dir, else the per-user data dir)")] = None,
    auth: Annotated[bool, typer.Option("--auth", help="the embedded nats-server requires a token: $LLMBUS_NATS_TOKEN "
                                       "(or bus.auth.token_env's variable), else one kept in the per-user data dir")] = False,
    cluster: Annotated[int, typer.Option("--cluster", min=0, max=9, help="run N ≥ 2 clustered nats-servers (client "
                                         "ports bus.port … bus.port+N-1), streams and buckets with N replicas (≤ 3), "
                                         "actors spread over them")] = 0,
    uvloop: UvloopOpt = False,
    verbose: VerboseOpt = False,
    metrics_port: MetricsPortOpt = None,
    http: HttpOpt = None,
) -> None:
    """Run every actor in this process; with no NATS URL given (or with --port), start nats-server
    too. The banner (first, on stderr) says which URL won and why. Ctrl-C stops."""
    opts = options(ctx, config, verbose=verbose)
    opts.log(logging.WARNING)  # the banner comes first; -v for the actors' lines
    settings = opts.settings()
    settings = with_http(settings, http)
    if cluster == 1 or (cluster and settings.bus.nats_url and port is None):
        err.print(f"--cluster N runs N ≥ 2 servers of its own: give N ≥ 2, and unset {url_origin(opts)} "
                  "(or give --port)", markup=False)
        raise typer.Exit(2)
    token, how = None, ""
    if auth:
        if settings.bus.nats_url and port is None:
            err.print(f"--auth runs its own nats-server: unset {url_origin(opts)} or give --port", markup=False)
            raise typer.Exit(2)
        token, how, settings = _up_token(settings)
    from actors.runtime import stop_on_signal
    from actors.stack import build_actors, embedded
    from bus.connection import redact
    from bus.server import url_greets

    url_given = settings.bus.nats_url and port is None
    if port is not None and settings.bus.nats_url:
        why = f"--port {port} given: {url_origin(opts)}={redact(settings.bus.nats_url)} is not used"
    elif url_given:
        why = f"the NATS server of {url_origin(opts)}"
    elif port is not None:
        why = f"--port {port}"
    else:
        why = f"bus.host/bus.port of {settings.source}"
    if url_given and not url_greets(settings.bus.url):
        err.print(f"no NATS server answers at {redact(settings.bus.url)} ({url_origin(opts)}): start it, or unset "
                  f"{url_origin(opts)} (or give --port) to let `llmbus up` run its own", markup=False)
        raise typer.Exit(1)
    try:
        metrics_at = observe(settings, metrics_port)
    except OSError as exc:
        err.print(f"error: metrics endpoint: {exc}", markup=False)
        raise typer.Exit(1) from None

    async def main() -> None:
        if url_given:
            from actors.runtime import run_actors

            actors = build_actors(settings)
            async with anyio.create_task_group() as tg:
                await tg.start(run_actors, actors, settings.bus.url)
                _announce(settings.bus.url, actors, settings, server="NATS server already running", why=why,
                          store=None, metrics_at=metrics_at)
                await stop_on_signal(actors)
            return
        where = store or settings.bus.store_path()
        if cluster:
            from actors.cli.cluster import up_cluster

            await up_cluster(settings, cluster, port=settings.bus.port if port is None else port,
                             store=where / "cluster", token=token, why=why, auth=how)
            return
        async with embedded(settings, port=settings.bus.port if port is None else port, store=where,
                            reuse=token is None, token=token) as stack:
            _announce(stack.url, stack.actors, settings, why=why, store=where if stack.server else None,
                      server="embedded nats-server" if stack.server is not None else "nats-server already running",
                      auth=how, metrics_at=metrics_at)
            await stop_on_signal(stack.actors)

    try:
        run_async(main, uvloop=uvloop)
    except* LlmError as group:
        err.print(f"error: {first_of(group)}", markup=False)
        raise typer.Exit(1) from None
    except* ConfigError as group:
        err.print(f"error: {first_of(group)}", markup=False)
        raise typer.Exit(2) from None
    except* OSError as group:
        err.print(f"error: {first_of(group)}", markup=False)
        raise typer.Exit(1) from None
    err.print("stopped cleanly", style="green", markup=False)


def first_of(group: BaseExceptionGroup) -> BaseException:
    """The first error of ``group``, out of the groups around it (an actor's own task group nests one)."""
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


TOKEN_FILE = "nats-token"


def _up_token(settings: settings_mod.Settings) -> tuple[str, str, settings_mod.Settings]:
    """The token ``up --auth`` protects the bus with, how clients get it (for the banner: never the
    token itself), and the settings whose ``[bus.auth]`` gives it to every actor. From the variable
    ``bus.auth.token_env`` names (or ``$LLMBUS_NATS_TOKEN``), else the per-user data dir's
    ``nats-token`` file (made once, readable by its owner only)."""
    import os
    import secrets

    env = settings.bus.auth.token_env
    if env and os.environ.get(env):
        return os.environ[env], f"token from ${env}; clients: the same ${env} (or --token-env {env})", settings
    path = settings_mod.data_dir() / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    if not token:
        raise typer.BadParameter(f"{path} is empty: remove it to get a new token")
    env = settings_mod.TOKEN_ENV
    os.environ[env] = token  # the actors' [bus.auth] reads it from here (this process only)
    bus = msgspec.structs.replace(settings.bus, auth=msgspec.structs.replace(settings.bus.auth, token_env=env))
    return token, f"token in {path}; clients: export {env}=$(cat {path})", msgspec.structs.replace(settings, bus=bus)


def _announce(url: str, actors, settings: settings_mod.Settings, *, server: str, why: str, store,
              auth: str = "", metrics_at: str = "") -> None:
    """The banner: where the fleet is and what runs in it, one fact per line, never wrapped."""
    from actors.stack import unconfigured
    from bus.connection import redact

    missing = unconfigured(settings)
    running = {a.name for a in actors}
    url = redact(url)  # a URL given with credentials: the banner never shows them
    lines = [
        f"llmbus up: {server} at {url} ({why}) — {len(actors)} actors; Ctrl-C stops",
        f"  export LLMBUS_NATS_URL={url}",
        *([f"  auth:      {auth}"] if auth else []),
        f"  config:    {Path(settings.source).resolve() if Path(settings.source).is_file() else settings.source}",
        f"  store:     {store if store is not None else '(the running server keeps its own)'}",
        f"  cache:     {settings.cache.path() / settings.bus.root if settings.cache.enabled else 'off'}",
        *([f"  metrics:   {metrics_at}"] if metrics_at else []),
        "  providers:",
    ]
    width = max((len(n) for n in settings.providers), default=0)
    for name, p in settings.providers.items():
        model = p.model or f"{name}-1" if p.kind == "mock" else p.model
        state = f"not configured (set {missing[name]})" if name in missing else \
            "running" if f"provider-{name}" in running else "not running"
        lines.append(f"    {name:<{width}}  {p.kind:<9} {model:<24} {state}")
    lines.append(f"  strategy:  {settings.router.strategy}; failover order: {' → '.join(settings.provider_order()) or '(none)'}")
    for gateway in (a for a in actors if a.kind == "gateway"):
        lines.append(f"  http:      {gateway.url}/v1 (OpenAI base_url); dashboard {gateway.url}/")
    for line in lines:
        err.print(escape(line), soft_wrap=True)


def with_http(settings: settings_mod.Settings, http: str | None) -> settings_mod.Settings:
    """The settings with ``gateway.listen`` = ``http`` (``--http``): the gateway actor runs there."""
    if http is None:
        return settings
    from actors.gateway.config import address

    try:
        address(http)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--http") from None
    return msgspec.structs.replace(settings, gateway=msgspec.structs.replace(settings.gateway, listen=http))


@app.command()
def actor(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="router | health | cost | cache | gateway | provider.<name>")],
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
    uvloop: UvloopOpt = False,
    verbose: VerboseOpt = False,
    metrics_port: MetricsPortOpt = None,
    http: HttpOpt = None,
) -> None:
    """Run one actor in this process, against a NATS server that is already running."""
    settings = with_http(load_settings(ctx, config, nats_url, verbose=verbose, level=logging.INFO), http)
    from actors.runtime import stop_on_signal
    from actors.stack import actor_names, build_actor

    try:
        one = build_actor(name, settings)
    except KeyError:
        err.print(f"unknown actor {name!r}; this config has: {', '.join(actor_names(settings))}", markup=False)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    try:
        observe(settings, metrics_port)
    except OSError as exc:
        err.print(f"error: metrics endpoint: {exc}", markup=False)
        raise typer.Exit(1) from None

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(one.run, settings.bus.url)
            await stop_on_signal([one])

    try:
        run_async(main, uvloop=uvloop)
    except* (LlmError, OSError) as group:
        err.print(f"error: {group.exceptions[0]}", markup=False)
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
