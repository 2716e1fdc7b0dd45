"""``llmbus cost`` and ``llmbus budget set|show``: the ledger and the budgets, from the cost actor."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, YesOpt, confirm, err, group, load_settings, one_request,
                               out, printed_as_json)
from bus import messages as m
from bus.subjects import COST_BUDGET_SET, COST_BUDGETS, COST_QUOTAS, COST_REPORT

app = group()
budget_app = group(help="spending budgets per user or tier", no_args_is_help=True)
DayOpt = Optional[dt.datetime]
DAY_FORMATS = ["%Y-%m-%d"]


def _day(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d") if value is not None else None
app.add_typer(budget_app, name="budget")


@app.command()
def cost(
    ctx: typer.Context,
    by: Annotated[Literal["provider", "model", "tier", "user", "day", "strategy"], typer.Option(help="group by")] = "provider",
    since: Annotated[DayOpt, typer.Option(formats=DAY_FORMATS, metavar="YYYY-MM-DD", help="from this UTC day (inclusive)")] = None,
    until: Annotated[DayOpt, typer.Option(formats=DAY_FORMATS, metavar="YYYY-MM-DD", help="to this UTC day (inclusive)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Spend and tokens from the ledger, grouped; the total counts exactly the lines shown."""
    report = one_request(load_settings(ctx, config, nats_url), COST_REPORT,
                         m.CostQuery(by=by, since=_day(since), until=_day(until)), json_out=json_out)
    if printed_as_json(report, json_out, "cost"):
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
        out.print(f"average per ask: ${report.avg_cost_per_ask_usd:.6f}", markup=False)
    if report.total.unpriced_calls:
        err.print(f"{report.total.unpriced_calls} calls used models with no price: their cost is "
                  "unknown (add them to config/pricing.toml)", style="yellow", markup=False)


@budget_app.command("set")
def budget_set(
    ctx: typer.Context,
    limit_usd: Annotated[Optional[float], typer.Argument(min=0.0, help="the limit in USD (omit with --remove)")] = None,
    user: Annotated[Optional[str], typer.Option(help="a user's budget")] = None,
    tier: Annotated[Optional[str], typer.Option(help="a tier's budget")] = None,
    period: Annotated[Literal["day", "month"], typer.Option(help="the period (UTC)")] = "day",
    remove: Annotated[bool, typer.Option("--remove", help="remove this budget (after confirmation)")] = False,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set (or remove) the budget of one user or tier."""
    if (user is None) == (tier is None) or (limit_usd is None) != remove:
        raise typer.BadParameter("give exactly one of --user/--tier, and a limit (or --remove)")
    settings = load_settings(ctx, config, nats_url)
    scope = "user" if user else "tier"
    if remove:
        confirm(f"remove the {period} budget of {scope} {user or tier}?", yes)
    request = m.BudgetSet(scope=scope, name=user or tier, period=period, limit_usd=None if remove else limit_usd)
    _print_budgets(one_request(settings, COST_BUDGET_SET, request, json_out=json_out), json_out=json_out)


@budget_app.command("show")
def budget_show(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every budget: limit, spent, reserved; then every quota ([tiers.<name>.quotas]): used, held, left."""
    from actors.cli.common import on_fleet, print_json, service

    async def both(client):
        return await service(COST_BUDGETS, m.BudgetQuery())(client), await service(COST_QUOTAS, m.QuotaQuery())(client)

    report, quotas = on_fleet(load_settings(ctx, config, nats_url), both, json_out=json_out)
    if json_out and isinstance(report, m.BudgetReport):  # one document: the budgets, and the quotas beside them
        print_json({**msgspec.to_builtins(report),
                    "quotas": msgspec.to_builtins(quotas.quotas) if isinstance(quotas, m.QuotaReport) else []})
        return
    _print_budgets(report, json_out=json_out)
    if isinstance(quotas, m.QuotaReport) and quotas.quotas:
        table = Table(title="llmbus quotas")
        for col in ("tier", "quota", "period", "limit", "used", "held", "left"):
            table.add_column(col)
        for q in quotas.quotas:
            table.add_row(escape(q.tier), q.quota, f"{q.period} {q.stamp}", str(q.limit), str(q.used), str(q.held),
                          str(q.left))
        out.print(table)


def _print_budgets(report, *, json_out: bool) -> None:
    if printed_as_json(report, json_out, "cost"):
        return
    if not report.budgets:
        out.print("no budgets set (llmbus budget set USD --user U | --tier T)", markup=False)
    else:
        table = Table(title="llmbus budgets")
        for col in ("scope", "name", "period", "limit USD", "spent USD", "reserved USD", "left USD"):
            table.add_column(col)
        for b in report.budgets:
            table.add_row(b.scope, escape(b.name), b.period, f"{b.limit_usd:.6f}", f"{b.spent_usd:.6f}",
                          f"{b.reserved_usd:.6f}", f"{b.limit_usd - b.spent_usd - b.reserved_usd:.6f}")
        out.print(table)
