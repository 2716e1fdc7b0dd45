"""``llmbus status`` and ``llmbus health reset``: the providers' circuit breakers, from the health
actor, with what the fleet's provider actors report (discovery) and the router's provider order."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import anyio
import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.cache import hit_rate
from actors.cli.ensembles import learned, print_learned
from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, YesOpt, confirm, err, group, load_settings, on_fleet, out,
                               print_json, printed_as_json, service)
from bus import messages as m
from bus.subjects import CONTROL_STRATEGY, HEALTH_RESET, HEALTH_STATUS

app = group()
health_app = group(help="circuit breakers", no_args_is_help=True)
app.add_typer(health_app, name="health")


class ProviderStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One provider in ``llmbus status --json``: its health, and whether an actor serves it."""

    provider: str
    configured: bool  # a provider actor for it answers discovery (it starts only where it can run)
    health: m.ProviderHealth


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """``llmbus status --json``: everything the table shows."""

    providers: list[ProviderStatus] = []
    order: list[str] = []  # the router's failover order (empty: no router answered)
    strategy: str | None = None  # the default strategy routers use now
    cache: m.CacheStats | None = None  # None: no cache actor answered
    at: float = 0.0
    reliability: dict = {}  # --detailed: consensus's learned reliability per provider and field
    # the fleet's metrics (actors.metrics, the Prometheus endpoint's numbers): family -> [[labels…, value]]
    metrics: dict[str, list[list]] = {}


@app.command()
def status(
    ctx: typer.Context,
    detailed: Annotated[bool, typer.Option("--detailed", "-d", help="errors by kind, recent transitions, consensus's learned reliability")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Providers' health: breaker state, success rate, latency, errors, time to retry; the router's
    order and strategy; the cache's figures."""
    settings = load_settings(ctx, config, nats_url)
    from actors.cli.fleet import discover

    from actors.copies import fleet_cache, fleet_health

    strategy = service(CONTROL_STRATEGY, m.StrategyQuery(), budget_ms=500)

    async def calls(client):
        results = {}

        async def one(key, work):
            results[key] = await work

        async with anyio.create_task_group() as tg:  # each waits on its own replies: wait once
            tg.start_soon(one, "health", fleet_health(client, m.HealthQuery(detailed=detailed)))
            tg.start_soon(one, "cache", fleet_cache(client))
            tg.start_soon(one, "strategy", strategy(client))
            tg.start_soon(one, "actors", discover(client))
            tg.start_soon(one, "metrics", fleet_metrics(client))
            if detailed:
                tg.start_soon(one, "reliability", learned(client))
        return (results["health"], results["cache"], results["strategy"], results["actors"], results.get("reliability"),
                results["metrics"])

    report, cache_report, choice, infos, reliability, figures = on_fleet(settings, calls, json_out=json_out)
    if isinstance(report, m.Failure):
        printed_as_json(report, json_out, "health")
    running = {(i.get("metadata") or {}).get("provider") for i in infos}
    full = StatusReport(
        providers=[ProviderStatus(provider=p.breaker.provider, configured=p.breaker.provider in running, health=p)
                   for p in report.providers],
        order=choice.order if isinstance(choice, m.StrategyReport) else [],
        strategy=choice.default if isinstance(choice, m.StrategyReport) else None,
        cache=cache_report if isinstance(cache_report, m.CacheStats) else None,
        at=report.at or time.time(),
        reliability=reliability or {},
        metrics={name: [[*k, list(v) if isinstance(v, tuple) else v] for k, v in rows.items()]
                 for name, rows in figures.items()},
    )
    if json_out:
        print_json(full)
        return
    _print_health(full.providers, detailed=detailed)
    if full.order:
        err.print(f"strategy {full.strategy}; provider order: {' → '.join(full.order)}", markup=False)
    if full.cache is not None:
        c = full.cache.total
        err.print(f"cache: {full.cache.entries} entries, {c.hits} hits / {c.misses} misses ({hit_rate(c.hits, c.misses)}), "
                  f"{c.coalesced} coalesced, {c.stores} stored — `llmbus cache stats` for more", markup=False)
    if figures:
        _print_metrics(figures)
    if detailed and full.reliability:
        print_learned(full.reliability)


@health_app.command("reset")
def health_reset(
    ctx: typer.Context,
    provider: Annotated[Optional[str], typer.Argument(help="one provider (default: all, after confirmation)")] = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close a provider's breaker (or every breaker) now. Names the fleet does not know are refused."""
    settings = load_settings(ctx, config, nats_url)
    from bus.deadline import deadline_in

    if provider is None:
        confirm("close every provider's breaker?", yes)

    async def reset(client):
        known = await client.rpc.service(HEALTH_STATUS, m.HealthQuery(), deadline=deadline_in(2_000))
        if provider is not None and isinstance(known, m.HealthReport):
            names = [p.breaker.provider for p in known.providers]
            if provider not in names:
                return m.Failure(kind=m.BAD_REQUEST, message=f"the fleet has no provider {provider!r}; it has: "
                                 f"{', '.join(names) or '(none)'}")
        return await client.rpc.service(HEALTH_RESET, m.HealthReset(provider=provider), deadline=deadline_in(2_000))

    report = on_fleet(settings, reset, json_out=json_out)
    if printed_as_json(report, json_out, "health"):
        return
    _print_health([ProviderStatus(provider=p.breaker.provider, configured=True, health=p) for p in report.providers],
                  detailed=False)


def _print_health(rows: list[ProviderStatus], *, detailed: bool) -> None:
    now = time.time()
    table = Table(title="llmbus status — provider health")
    columns = ["provider", "state", "success", "p50 ms", "p95 ms", "errors", "last success", "last failure", "retry in"]
    if detailed:
        columns += ["errors by kind", "recent transitions"]
    for col in columns:
        table.add_column(col)
    colour = {"closed": "green", "half_open": "yellow", "open": "red"}
    for row in rows:
        p = row.health
        b = p.breaker
        if not row.configured and not p.calls:
            state = "[dim]no actor runs (not configured where the actors run)[/dim]"
        else:
            state = f"[{colour.get(b.state, 'white')}]{escape(b.state)}[/]"
        cells = [
            escape(b.provider),
            state,
            f"{100.0 * p.successes / p.calls:.1f}% of {p.calls}" if p.calls else "—",
            f"{p.latency_p50_ms:.1f}" if p.latency_p50_ms is not None else "—",
            f"{p.latency_p95_ms:.1f}" if p.latency_p95_ms is not None else "—",
            str(p.calls - p.successes),
            _ago(p.last_success, now),
            _ago(p.last_failure, now) + (escape(f" ({p.last_error})") if p.last_error else ""),
            f"{max(0.0, b.open_until - now):.1f}s" if b.state == "open" else "—",
        ]
        if detailed:
            cells += [escape(", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items()))) or "—",
                      escape("\n".join(p.transitions)) or "—"]
        table.add_row(*cells)
    out.print(table)


def _le(bound: float | None) -> str:
    return "—" if bound is None else "∞" if bound == float("inf") else f"{bound * 1000:g} ms"


async def fleet_metrics(client) -> dict:
    """The fleet's figures (``actors.metrics``): each actor's ``$SRV.STATS`` carries its process's
    snapshot (on its first endpoint), merged once per process."""
    from actors.cli.fleet import discover
    from actors.metrics import merge

    stats = await discover(client, verb="STATS")
    return merge([ep["data"]["metrics"] for s in stats for ep in (s.get("endpoints") or [])[:1]
                  if isinstance(ep.get("data"), dict) and "metrics" in ep["data"]])


def _print_metrics(figures: dict) -> None:
    """Asks by strategy and tier, provider calls, cache events, cost: the endpoint's numbers."""
    from actors.metrics import quantile

    table = Table(title="llmbus status — metrics (every actor process; `--metrics-port` serves them to Prometheus)")
    for col in ("what", "by", "count", "detail"):
        table.add_column(col)
    by: dict[tuple, dict[str, float]] = {}
    for (strategy, tier, outcome), n in figures.get("llmbus_asks", {}).items():
        by.setdefault((strategy, tier), {})[outcome] = n
    seconds = figures.get("llmbus_ask_seconds", {})
    for (strategy, tier), outcomes in sorted(by.items()):
        count, total, buckets = seconds.get((strategy,), (0, 0.0, []))
        detail = ", ".join(f"{k} {int(v)}" for k, v in sorted(outcomes.items()))
        p50, p95 = (quantile("llmbus_ask_seconds", buckets, q) for q in (0.5, 0.95))
        within = f", p50 ≤ {_le(p50)}, p95 ≤ {_le(p95)}" if p50 is not None else ""
        mean = f"; mean {1000.0 * total / count:.1f} ms{within} ({strategy})" if count else ""
        table.add_row("asks", escape(f"{strategy} / {tier or '-'}"), str(int(sum(outcomes.values()))), escape(detail + mean))
    calls: dict[str, dict[str, float]] = {}
    for (provider, outcome), n in figures.get("llmbus_provider_calls", {}).items():
        calls.setdefault(provider, {})[outcome] = n
    for provider, outcomes in sorted(calls.items()):
        table.add_row("provider calls", escape(provider), str(int(sum(outcomes.values()))),
                      escape(", ".join(f"{k} {int(v)}" for k, v in sorted(outcomes.items()))))
    events = figures.get("llmbus_cache_events", {})
    if events:
        table.add_row("cache", "events", str(int(sum(events.values()))),
                      ", ".join(f"{k[0]} {int(v)}" for k, v in sorted(events.items())))
    for (provider, tier), usd in sorted(figures.get("llmbus_cost_usd", {}).items()):
        table.add_row("cost", escape(f"{provider} / {tier or '-'}"), "", f"${usd:.6f}")
    for (tier, route), n in sorted(figures.get("llmbus_fallback_routes", {}).items()):
        table.add_row("fallback route", escape(f"{tier or '-'} / {route}"), str(int(n)), "")
    reviews = figures.get("llmbus_quality_reviews", {})
    if reviews:
        table.add_row("quality reviews", "first pass", str(int(sum(reviews.values()))),
                      ", ".join(f"{k[0]} {int(v)}" for k, v in sorted(reviews.items())))
    out.print(table)


def _ago(t: float | None, now: float) -> str:
    return "—" if t is None else f"{max(0.0, now - t):.1f}s ago"
