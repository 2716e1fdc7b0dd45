"""``llmbus cache stats|clear``: the answer cache, from the cache actor."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, load_settings, one_request, out, printed_as_json
from bus import messages as m
from bus.subjects import CACHE_CLEAR, CACHE_STATS

app = typer.Typer()
cache_app = typer.Typer(help="the answer cache", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Entries and size on disk; hits, misses, coalesced asks and stores per namespace (since start)."""
    report = one_request(load_settings(ctx, config, nats_url), CACHE_STATS, m.CacheStatsQuery())
    if printed_as_json(report, json_out, "cache"):
        return
    mib = 2**20
    table = Table(title=f"llmbus cache — {report.entries} entries, {report.bytes / mib:.1f} of "
                        f"{report.size_limit_bytes / mib:.0f} MiB", caption=report.directory)
    for col in ("namespace", "TTL", "hits", "misses", "hit rate", "coalesced", "stored"):
        table.add_column(col, justify="left" if col == "namespace" else "right")
    total = report.total
    for ns in [*report.namespaces, total]:
        table.add_row(escape(ns.namespace), _duration(ns.ttl_s) if ns is not total else "", str(ns.hits),
                      str(ns.misses), hit_rate(ns.hits, ns.misses), str(ns.coalesced), str(ns.stores),
                      style="bold" if ns is total else None)
    out.print(table)


@cache_app.command("clear")
def cache_clear(
    ctx: typer.Context,
    namespace: Annotated[Optional[str], typer.Option("--namespace", "-n", help="only this namespace")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove every cached answer, or those of one namespace."""
    report = one_request(load_settings(ctx, config, nats_url), CACHE_CLEAR, m.CacheClear(namespace=namespace))
    if not printed_as_json(report, json_out, "cache"):
        out.print(f"removed {report.removed} entries" + (f" of namespace {namespace}" if namespace else ""),
                  highlight=False, markup=False)


def hit_rate(hits: int, misses: int) -> str:
    return f"{100.0 * hits / (hits + misses):.1f}%" if hits + misses else "—"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
