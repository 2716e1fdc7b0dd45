"""``llmbus tiers``: the effective tier matrix — one column per tier, one row per setting — as the
routers of this config would apply it (the environment switches included)."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, group, load_settings, out, write_out
from actors.routing_settings import TierSettings, multi_llm

app = group()


def matrix(settings) -> dict[str, dict[str, object]]:
    """tier -> setting -> value (what ``llmbus tiers`` prints)."""
    order = settings.provider_order()
    rows: dict[str, dict[str, object]] = {}
    for name, tier in sorted(settings.tiers.items(), key=lambda kv: kv[1].priority):
        tier: TierSettings
        on = multi_llm(name)
        usable_routes = [r for r in tier.routes if r.rules or not r.providers or any(p in order for p in r.providers)]
        rows[name] = {
            "strategy": (tier.strategy or settings.router.strategy) if on else "single (LLMBUS_MULTI_LLM off)",
            "candidates": tier.candidates(order),
            "providers asked": tier.fanout,
            "supervision depth": tier.supervision,
            "retries": tier.retries,
            "cost ceiling (USD/ask)": tier.max_cost_usd,
            "fallback routes": [r.name + (" (rules)" if r.rules else "") for r in usable_routes]
            if tier.fallback_routes and on else [],
            "cache namespace": f"tier-{name}" if tier.cache == "dedicated" else settings.cache.default_namespace,
            "priority": tier.priority,
            "options": tier.options,
        }
    return rows


@app.command()
def tiers(ctx: typer.Context, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The tiers of this config ([tiers.<name>]): strategy, candidates, retries, cost ceiling,
    fallback routes, cache namespace, priority — one column per tier."""
    settings = load_settings(ctx, config)
    rows = matrix(settings)
    if json_out:
        write_out(json.dumps(rows))
        return
    if not rows:
        out.print(f"no [tiers.*] in {settings.source}")
        return
    table = Table(title=f"llmbus tiers ({settings.source})")
    table.add_column("setting")
    for name in rows:
        table.add_column(name)
    for setting in next(iter(rows.values())):
        cells = []
        for values in rows.values():
            v = values[setting]
            cells.append("—" if v in (None, [], {}) else ", ".join(map(str, v)) if isinstance(v, list)
                         else json.dumps(v) if isinstance(v, dict) else str(v))
        table.add_row(setting, *map(escape, cells))
    out.print(table)
