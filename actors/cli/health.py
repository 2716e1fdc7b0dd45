"""``llmbus status`` and ``llmbus health reset``: the providers' circuit breakers, from the health actor."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from actors import settings as settings_mod
from actors.cli.cache import hit_rate
from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, load_settings, one_request, out, printed_as_json,
                               run_async, service, with_client)
from bus import messages as m
from bus.subjects import CACHE_STATS, HEALTH_RESET, HEALTH_STATUS

app = typer.Typer()
health_app = typer.Typer(help="circuit breakers", no_args_is_help=True)
app.add_typer(health_app, name="health")


@app.command()
def status(
    ctx: typer.Context,
    detailed: Annotated[bool, typer.Option("--detailed", "-d", help="errors by kind and recent transitions")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Providers' health: breaker state, success rate, latency, errors, time to retry."""
    settings = load_settings(ctx, config, nats_url)
    health = service(HEALTH_STATUS, m.HealthQuery(detailed=detailed))
    cache = service(CACHE_STATS, m.CacheStatsQuery(), budget_ms=500)

    async def calls(client):
        return await health(client), await cache(client)

    report, cache_report = run_async(with_client, settings, calls)
    _print_health(report, detailed=detailed, json_out=json_out, settings=settings)
    if not json_out and isinstance(cache_report, m.CacheStats):
        c = cache_report.total
        out.print(f"cache: {cache_report.entries} entries, {c.hits} hits / {c.misses} misses ({hit_rate(c.hits, c.misses)}), "
                  f"{c.coalesced} coalesced, {c.stores} stored — `llmbus cache stats` for more", highlight=False)


@health_app.command("reset")
def health_reset(
    ctx: typer.Context,
    provider: Annotated[Optional[str], typer.Argument(help="one provider (default: all)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close a provider's breaker (or every breaker) now."""
    settings = load_settings(ctx, config, nats_url)
    report = one_request(settings, HEALTH_RESET, m.HealthReset(provider=provider))
    _print_health(report, detailed=False, json_out=json_out, settings=settings)


def _print_health(report, *, detailed: bool, json_out: bool, settings: settings_mod.Settings) -> None:
    if printed_as_json(report, json_out, "health"):
        return
    now = time.time()
    table = Table(title="llmbus status — provider health")
    columns = ["provider", "state", "success", "p50 ms", "p95 ms", "errors", "last success", "last failure", "retry in"]
    if detailed:
        columns += ["errors by kind", "recent transitions"]
    for col in columns:
        table.add_column(col)
    colour = {"closed": "green", "half_open": "yellow", "open": "red", "misconfigured": "magenta"}
    for p in report.providers:
        b = p.breaker
        config = settings.providers.get(b.provider)
        missing = config.missing_key() if config is not None else None
        shown = f"{b.state} ({b.reason})" if b.state == "misconfigured" and b.reason else b.state
        state = (f"[dim]not configured (set {missing})[/]" if missing and not p.calls
                 else f"[{colour.get(b.state, 'white')}]{escape(shown)}[/]")
        row = [
            b.provider,
            state,
            f"{100.0 * p.successes / p.calls:.1f}% of {p.calls}" if p.calls else "—",
            f"{p.latency_p50_ms:.1f}" if p.latency_p50_ms is not None else "—",
            f"{p.latency_p95_ms:.1f}" if p.latency_p95_ms is not None else "—",
            str(p.calls - p.successes),
            _ago(p.last_success, now),
            _ago(p.last_failure, now) + (f" ({p.last_error})" if p.last_error else ""),
            retry_in(b, now),
        ]
        if detailed:
            row += [", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items())) or "—", escape("\n".join(p.transitions)) or "—"]
        table.add_row(*row)
    out.print(table)
    for p in report.providers:  # what a misconfigured provider said, in full (its key already cut out)
        if p.breaker.state == "misconfigured" and p.breaker.detail:
            out.print(f"{p.breaker.provider}: {p.breaker.detail}", highlight=False, markup=False)


def retry_in(b: m.BreakerState, now: float) -> str:
    if b.state == "open":
        return f"{max(0.0, b.open_until - now):.1f}s"
    if b.state == "misconfigured":
        return f"after `llmbus health reset {b.provider}` or a good `llmbus test {b.provider}`"
    return "—"


def _ago(t: float | None, now: float) -> str:
    return "—" if t is None else f"{max(0.0, now - t):.1f}s ago"
