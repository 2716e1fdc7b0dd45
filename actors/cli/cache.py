"""``llmbus cache stats|clear``: the answer cache, from the cache actor."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, YesOpt, confirm, group, human_bytes, load_settings,
                               on_fleet, one_request, out, printed_as_json, write_out)
from bus import messages as m
from bus.subjects import CACHE_CLEAR

app = group()
cache_app = group(help="the answer cache", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Entries and size on disk; hits, misses, coalesced asks and stores per namespace (since start),
    summed over every copy of the cache actor."""
    from actors.copies import fleet_cache

    report = on_fleet(load_settings(ctx, config, nats_url), fleet_cache, json_out=json_out)
    if printed_as_json(report, json_out, "cache"):
        return
    table = Table(title=f"llmbus cache — {report.entries} entries, {human_bytes(report.bytes)} of "
                        f"{human_bytes(report.size_limit_bytes)}", caption=escape(report.directory))
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
    yes: YesOpt = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove every cached answer, or those of one namespace (after confirmation, unless --yes)."""
    settings = load_settings(ctx, config, nats_url)
    confirm(f"remove every cached answer{f' of namespace {namespace}' if namespace else ''}?", yes)
    report = one_request(settings, CACHE_CLEAR, m.CacheClear(namespace=namespace), json_out=json_out)
    if not printed_as_json(report, json_out, "cache"):
        write_out(f"removed {report.removed} entries" + (f" of namespace {namespace}" if namespace else ""))


def hit_rate(hits: int, misses: int) -> str:
    return f"{100.0 * hits / (hits + misses):.1f}%" if hits + misses else "—"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
