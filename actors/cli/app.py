"""``llmbus``: run the stack, run one actor, ask, demo, bench.

Exit codes: 0 success; 1 the ask failed (a typed Failure, printed as ``kind: message``);
2 bad usage or configuration (an invalid config file, an unknown actor name).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import anyio
import msgspec
import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bus import messages as m
from bus.errors import ConfigError, LlmError
from actors import settings as settings_mod

app = typer.Typer(add_completion=False, no_args_is_help=True, help="llmbus: multi-LLM orchestration over NATS")
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="config TOML (default: $LLMBUS_CONFIG or config/llmbus.toml)")]
UrlOpt = Annotated[Optional[str], typer.Option("--nats-url", help="NATS server URL (default: bus.nats_url, or the embedded server's host:port)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the reply as JSON (for programs)")]
UvloopOpt = Annotated[bool, typer.Option("--uvloop/--no-uvloop", help="run on uvloop (if installed)")]


def configure_logging(level: int) -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def load_settings(config: Path | None) -> settings_mod.Settings:
    try:
        return settings_mod.load(config)
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def run_async(fn, *args, uvloop: bool = False):
    options = {"use_uvloop": True} if uvloop and _has_uvloop() else {}
    return anyio.run(fn, *args, backend="asyncio", backend_options=options)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# --- up / actor ---------------------------------------------------------------------------------


@app.command()
def up(
    config: ConfigOpt = None,
    port: Annotated[Optional[int], typer.Option(help="port of the embedded nats-server (default bus.port)")] = None,
    store: Annotated[Optional[Path], typer.Option(help="JetStream store dir (default bus.store_dir)")] = None,
    uvloop: UvloopOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run every actor in this process; with no bus.nats_url, start nats-server too. Ctrl-C stops."""
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    settings = load_settings(config)
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
    name: Annotated[str, typer.Argument(help="router | provider.<name>")],
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
    uvloop: UvloopOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one actor in this process, against a NATS server that is already running."""
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    settings = load_settings(config)
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
    url = nats_url or settings.bus.url

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(one.run, url)
            await stop_on_signal([one])

    try:
        run_async(main, uvloop=uvloop)
    except LlmError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


# --- ask ----------------------------------------------------------------------------------------


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="the question")],
    strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="single | failover")] = None,
    provider: Annotated[Optional[list[str]], typer.Option("--provider", "-p", help="provider(s), in order")] = None,
    budget_ms: Annotated[int, typer.Option("--budget-ms", "-b", help="time budget for the whole ask")] = 30_000,
    system: Annotated[Optional[str], typer.Option(help="a system prompt")] = None,
    retries: Annotated[int, typer.Option(help="resend the same ask id on no-responders / retryable failures")] = 0,
    user: Annotated[Optional[str], typer.Option(help="who asks (budgets, cost reports)")] = None,
    tier: Annotated[Optional[str], typer.Option(help="free | pro | premium … (budgets, cost reports)")] = None,
    max_cost_usd: Annotated[Optional[float], typer.Option("--max-cost-usd", help="a ceiling for this ask")] = None,
    cache: Annotated[str, typer.Option(help="use | refresh | skip: the answer cache")] = "use",
    namespace: Annotated[Optional[str], typer.Option(help="the cache namespace (it sets the TTL)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Publish one ask and print the answer. With nothing running, starts the embedded stack for it."""
    configure_logging(logging.WARNING)
    settings = load_settings(config)
    from bus.client import Client

    async def send(client: Client):
        try:
            return await client.ask(
                prompt, system=system, strategy=strategy, providers=provider or None,
                budget_ms=budget_ms, retries=retries, user=user, tier=tier, max_cost_usd=max_cost_usd,
                cache=cache, cache_namespace=namespace,
            )
        except LlmError as exc:
            return exc.failure

    reply = run_async(with_client, settings, nats_url, send)
    if json_out:
        sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
    elif isinstance(reply, m.Answer):
        out.print(reply.text, highlight=False, markup=False)
        err.print(_route_line(reply.route), highlight=False)
    if isinstance(reply, m.Failure):
        if not json_out:
            err.print(f"[red]{reply.kind}[/red]: {reply.message}", highlight=False)
            if reply.route:
                err.print(_route_line(reply.route), highlight=False)
        raise typer.Exit(1)


async def with_client(settings: settings_mod.Settings, nats_url: str | None, work):
    """Run ``work(client)`` against the running bus, or — when nothing answers at the default URL
    and none was given — against a private embedded stack started for this one command."""
    from bus.client import Client
    from bus.server import url_greets

    url = nats_url or settings.bus.url
    if not (nats_url or settings.bus.nats_url or url_greets(url)):
        from actors.stack import embedded

        async with embedded(settings) as stack:
            async with Client(stack.url, root=settings.bus.root, name="llmbus-cli") as client:
                return await work(client)
    async with Client(url, root=settings.bus.root, name="llmbus-cli") as client:
        return await work(client)


@app.command("test")
def test_provider(
    provider: Annotated[str, typer.Argument(help="the provider name, as in [providers.<name>]")],
    budget_ms: Annotated[int, typer.Option("--budget-ms", "-b")] = 30_000,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send one small request through the bus to one provider actor; print what it answered."""
    configure_logging(logging.WARNING)
    settings = load_settings(config)
    if provider not in settings.providers:
        err.print(f"[red]unknown provider {provider!r}[/red]; configured: {', '.join(settings.providers)}", highlight=False)
        raise typer.Exit(2)
    from bus.deadline import deadline_in
    from bus.subjects import RPC_TABLE
    from bus.rpc import new_id

    async def call(client):
        request = m.Complete(
            id=new_id(), ask_id=new_id(), params=m.Params(max_tokens=16),
            messages=[m.Message(role="user", content="Reply with the single word: pong")],
        )
        started = anyio.current_time()
        reply = await client.rpc.call(
            client.subjects.provider_complete(provider), request, codec.complete_reply,
            deadline=deadline_in(budget_ms), ask_id=request.ask_id, call_id=request.id,
        )
        return reply, (anyio.current_time() - started) * 1000.0

    reply, ms = run_async(with_client, settings, nats_url, call)
    if json_out:
        sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
    elif isinstance(reply, m.Completion):
        table = Table(title=f"llmbus test {provider}", show_header=False)
        for key, value in [("model", reply.model), ("answer", reply.text[:80]), ("round trip", f"{ms:.1f} ms"),
                           ("provider latency", f"{reply.latency_ms:.1f} ms"), ("input tokens", str(reply.usage.input_tokens)),
                           ("output tokens", str(reply.usage.output_tokens)), ("cached tokens", str(reply.usage.cached_tokens)),
                           ("finish reason", reply.finish_reason)]:
            table.add_row(key, escape(value))
        out.print(table)
    if isinstance(reply, m.Failure):
        if not json_out:
            err.print(f"[red]{reply.kind}[/red]: {reply.message}", highlight=False)
            if reply.kind == m.UNAVAILABLE and (env := settings.providers[provider].missing_key()):
                err.print(f"provider {provider} is not configured here: set {env}", highlight=False)
        raise typer.Exit(1)


@app.command()
def status(
    detailed: Annotated[bool, typer.Option("--detailed", "-d", help="errors by kind and recent transitions")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Providers' health: breaker state, success rate, latency, errors, time to retry."""
    configure_logging(logging.WARNING)
    settings = load_settings(config)
    health = _service_call("health", "status", m.HealthQuery(detailed=detailed), m.HealthReport)
    cache = _service_call("cache", "stats", m.CacheStatsQuery(), m.CacheStats, budget_ms=500)

    async def calls(client):
        return await health(client), await cache(client)

    report, cache_report = run_async(with_client, settings, nats_url, calls)
    _print_health(report, detailed=detailed, json_out=json_out, settings=settings)
    if not json_out and isinstance(cache_report, m.CacheStats):
        c = cache_report.total
        out.print(f"cache: {cache_report.entries} entries, {c.hits} hits / {c.misses} misses ({_rate(c.hits, c.misses)}), "
                  f"{c.coalesced} coalesced, {c.stores} stored — `llmbus cache stats` for more", highlight=False)


health_app = typer.Typer(help="circuit breakers", no_args_is_help=True)
app.add_typer(health_app, name="health")


@health_app.command("reset")
def health_reset(
    provider: Annotated[Optional[str], typer.Argument(help="one provider (default: all)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close a provider's breaker (or every breaker) now."""
    configure_logging(logging.WARNING)
    settings = load_settings(config)
    report = _one_request(settings, nats_url, "health", "reset", m.HealthReset(provider=provider), m.HealthReport)
    _print_health(report, detailed=False, json_out=json_out, settings=settings)


def _print_health(report, *, detailed: bool, json_out: bool, settings: settings_mod.Settings) -> None:
    import time

    if _printed_as_json(report, json_out, "health"):
        return
    now = time.time()
    table = Table(title="llmbus status — provider health")
    columns = ["provider", "state", "success", "p50 ms", "p95 ms", "errors", "last success", "last failure", "retry in"]
    if detailed:
        columns += ["errors by kind", "recent transitions"]
    for col in columns:
        table.add_column(col)
    colour = {"closed": "green", "half_open": "yellow", "open": "red"}
    for p in report.providers:
        b = p.breaker
        config = settings.providers.get(b.provider)
        missing = config.missing_key() if config is not None else None
        state = f"[dim]not configured (set {missing})[/]" if missing and not p.calls else f"[{colour.get(b.state, 'white')}]{b.state}[/]"
        row = [
            b.provider,
            state,
            f"{100.0 * p.successes / p.calls:.1f}% of {p.calls}" if p.calls else "—",
            f"{p.latency_p50_ms:.1f}" if p.latency_p50_ms is not None else "—",
            f"{p.latency_p95_ms:.1f}" if p.latency_p95_ms is not None else "—",
            str(p.calls - p.successes),
            _ago(p.last_success, now),
            _ago(p.last_failure, now) + (f" ({p.last_error})" if p.last_error else ""),
            f"{max(0.0, b.open_until - now):.1f}s" if b.state == "open" else "—",
        ]
        if detailed:
            row += [", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items())) or "—", escape("\n".join(p.transitions)) or "—"]
        table.add_row(*row)
    out.print(table)


def _ago(t: float | None, now: float) -> str:
    return "—" if t is None else f"{max(0.0, now - t):.1f}s ago"


@app.command()
def cost(
    by: Annotated[str, typer.Option(help="provider | model | tier | user | day | strategy")] = "provider",
    since: Annotated[Optional[str], typer.Option(help="YYYY-MM-DD (UTC); with --by day")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Spend and tokens from the ledger, grouped."""
    report = _one_request(config, nats_url, "cost", "report", m.CostQuery(by=by, since=since), m.CostReport)
    if _printed_as_json(report, json_out, "cost"):
        return
    table = Table(title=f"llmbus cost — by {report.by}")
    for col in (report.by, "calls", "asks", "input tok", "output tok", "cached tok", "cost USD"):
        table.add_column(col, justify="left" if col == report.by else "right")
    for line in [*report.lines, report.total]:
        usd = f"{line.cost_usd:.6f}" + (f" + {line.unpriced_calls} unpriced" if line.unpriced_calls else "")
        table.add_row(escape(line.key), str(line.calls), str(line.asks), str(line.input_tokens),
                      str(line.output_tokens), str(line.cached_tokens), usd,
                      style="bold" if line is report.total else None)
    out.print(table)
    if report.avg_cost_per_ask_usd is not None:
        out.print(f"average per ask: ${report.avg_cost_per_ask_usd:.6f}")
    if report.total.unpriced_calls:
        err.print(f"[yellow]{report.total.unpriced_calls} calls used models with no price: their cost is "
                  "unknown (add them to config/pricing.toml)[/yellow]")


budget_app = typer.Typer(help="spending budgets per user or tier", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


@budget_app.command("set")
def budget_set(
    limit_usd: Annotated[Optional[float], typer.Argument(help="the limit in USD (omit with --remove)")] = None,
    user: Annotated[Optional[str], typer.Option(help="a user's budget")] = None,
    tier: Annotated[Optional[str], typer.Option(help="a tier's budget")] = None,
    period: Annotated[str, typer.Option(help="day | month (UTC)")] = "day",
    remove: Annotated[bool, typer.Option("--remove", help="remove this budget")] = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set (or remove) the budget of one user or tier."""
    if (user is None) == (tier is None) or (limit_usd is None) != remove:
        err.print("give exactly one of --user/--tier, and a limit (or --remove)")
        raise typer.Exit(2)
    request = m.BudgetSet(scope="user" if user else "tier", name=user or tier, period=period,
                          limit_usd=None if remove else limit_usd)
    _print_budgets(_one_request(config, nats_url, "cost", "budget.set", request, m.BudgetReport), json_out=False)


@budget_app.command("show")
def budget_show(
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every budget: limit, spent, reserved."""
    _print_budgets(_one_request(config, nats_url, "cost", "budgets", m.BudgetQuery(), m.BudgetReport), json_out=json_out)


def _print_budgets(report, *, json_out: bool) -> None:
    if _printed_as_json(report, json_out, "cost"):
        return
    table = Table(title="llmbus budgets")
    for col in ("scope", "name", "period", "limit USD", "spent USD", "reserved USD", "left USD"):
        table.add_column(col)
    for b in report.budgets:
        table.add_row(b.scope, escape(b.name), b.period, f"{b.limit_usd:.6f}", f"{b.spent_usd:.6f}",
                      f"{b.reserved_usd:.6f}", f"{b.limit_usd - b.spent_usd - b.reserved_usd:.6f}")
    out.print(table)


cache_app = typer.Typer(help="the answer cache", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Entries and size on disk; hits, misses, coalesced asks and stores per namespace (since start)."""
    report = _one_request(config, nats_url, "cache", "stats", m.CacheStatsQuery(), m.CacheStats)
    if _printed_as_json(report, json_out, "cache"):
        return
    mib = 2**20
    table = Table(title=f"llmbus cache — {report.entries} entries, {report.bytes / mib:.1f} of "
                        f"{report.size_limit_bytes / mib:.0f} MiB", caption=report.directory)
    for col in ("namespace", "TTL", "hits", "misses", "hit rate", "coalesced", "stored"):
        table.add_column(col, justify="left" if col == "namespace" else "right")
    total = report.total
    for ns in [*report.namespaces, total]:
        table.add_row(escape(ns.namespace), _duration(ns.ttl_s) if ns is not total else "", str(ns.hits),
                      str(ns.misses), _rate(ns.hits, ns.misses), str(ns.coalesced), str(ns.stores),
                      style="bold" if ns is total else None)
    out.print(table)


@cache_app.command("clear")
def cache_clear(
    namespace: Annotated[Optional[str], typer.Option("--namespace", "-n", help="only this namespace")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove every cached answer, or those of one namespace."""
    report = _one_request(config, nats_url, "cache", "clear", m.CacheClear(namespace=namespace), m.CacheCleared)
    if not _printed_as_json(report, json_out, "cache"):
        out.print(f"removed {report.removed} entries" + (f" of namespace {namespace}" if namespace else ""),
                  highlight=False, markup=False)


def _one_request(config: Path | settings_mod.Settings | None, nats_url: str | None, actor: str, verb: str,
                 request, reply_type):
    """Quiet logs, load the settings (unless given), send ``request`` to a service actor: its reply,
    or a Failure."""
    configure_logging(logging.WARNING)
    settings = config if isinstance(config, settings_mod.Settings) else load_settings(config)
    return run_async(with_client, settings, nats_url, _service_call(actor, verb, request, reply_type))


def _printed_as_json(report, json_out: bool, actor: str) -> bool:
    """Print ``report`` as JSON when asked; exit 1 on a Failure; True when nothing is left to print."""
    if json_out:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    if isinstance(report, m.Failure):
        _fail(report, json_out, actor)
    return json_out


def _rate(hits: int, misses: int) -> str:
    return f"{100.0 * hits / (hits + misses):.1f}%" if hits + misses else "—"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _service_call(actor: str, verb: str, request, reply_type, budget_ms: int = 2_000):
    from bus.deadline import deadline_in
    from bus.subjects import RPC_TABLE

    async def call(client):
        row = next(r for r in RPC_TABLE if r.pattern == f"{{root}}.{actor}.{verb}")
        return await client.rpc.service(row, request, deadline=deadline_in(budget_ms))

    return call


def _fail(failure: m.Failure, json_out: bool, actor: str) -> None:
    if not json_out:
        hint = f" (is the {actor} actor running? `llmbus up` runs it)" if failure.kind == m.UNAVAILABLE else ""
        err.print(f"[red]{failure.kind}[/red]: {failure.message}{hint}", highlight=False)
    raise typer.Exit(1)


def _route_line(route: list[m.Step]) -> str:
    return "route: " + " → ".join(f"{s.provider} {s.outcome} {s.ms:.1f}ms" for s in route)


# --- demo ---------------------------------------------------------------------------------------


@app.command()
def demo(config: ConfigOpt = None) -> None:
    """Start the embedded stack, send asks through every strategy, print what happened, stop."""
    configure_logging(logging.WARNING)
    settings = load_settings(config)
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


# --- bench --------------------------------------------------------------------------------------


@app.command()
def bench(
    json_out: JsonOpt = False,
    quick: Annotated[bool, typer.Option(help="fewer samples (a smoke run)")] = False,
    loop: Annotated[str, typer.Option(help="asyncio | uvloop | both")] = "both",
    only: Annotated[str, typer.Option(help="sections to run, a comma list: core, health, adapters, cache, cost")] = "core,health,adapters,cache,cost",
) -> None:
    """Measure llmbus against a bare nats-py path, the breaker check and SDK adapters; print ratios."""
    configure_logging(logging.WARNING)
    from actors.bench.measure import main as bench_main

    raise typer.Exit(bench_main(json_out=json_out, quick=quick, loop=loop, only=only))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
