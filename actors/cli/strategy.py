"""``llmbus strategies`` (what this version can run) and ``llmbus set-strategy`` (what a running
fleet does: the default strategy, for every tier or one, kept in KV and picked up live)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, group, load_settings, one_request, out, printed_as_json, write_out
from actors.strategies.base import describe_options, options_for, strategies as registered
from bus import messages as m
from bus.subjects import CONTROL_STRATEGY

app = group()


@app.command()
def strategies(ctx: typer.Context, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Every strategy: its name, what it does, and its options with their defaults (the config's
    [router.strategies.<name>] applied). An Ask overrides them with strategy_options."""
    settings = load_settings(ctx, config)
    rows = []
    for name, cls in registered().items():
        configured = msgspec.structs.asdict(options_for(cls, settings.router.strategies.get(name, {})))
        rows.append({
            "name": name,
            "description": cls.description,
            "default": name == settings.router.strategy,
            "options": [{"name": o, "type": t, "default": configured[o], "built_in": d}
                        for o, t, d in describe_options(cls)],
        })
    if json_out:
        write_out(json.dumps(rows))
        return
    table = Table(title=f"llmbus strategies — default: {settings.router.strategy} ({settings.source})")
    for col in ("strategy", "what it does", "options (default)"):
        table.add_column(col)
    for row in rows:
        opts = "\n".join(f"{o['name']}: {o['type']} = {json.dumps(o['default'])}" for o in row["options"]) or "—"
        table.add_row(escape(row["name"]) + (" *" if row["default"] else ""), escape(row["description"]), escape(opts))
    out.print(table)


@app.command("set-strategy")
def set_strategy(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="the strategy (see `llmbus strategies`)")] = None,
    tier: Annotated[Optional[str], typer.Option("--tier", "-t", help="only for asks of this tier")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="remove the setting: back to the config's")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set the strategy every router uses for asks that name none (for one tier with --tier); with no
    NAME, show what is set. Kept in KV: routers pick it up at once and after restarts."""
    if name is not None and clear:
        raise typer.BadParameter("give a NAME or --clear, not both")
    request = m.StrategyQuery() if name is None and not clear else m.StrategySet(strategy=name, tier=tier)
    report = one_request(load_settings(ctx, config, nats_url), CONTROL_STRATEGY, request, json_out=json_out)
    if printed_as_json(report, json_out, "router"):
        return
    write_out(f"default: {report.default}" + ("" if report.default == report.configured
                                              else f" (config: {report.configured})"))
    for t, s in report.tiers.items():
        write_out(f"tier {t}: {s}")
