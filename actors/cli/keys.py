"""``llmbus keys create|list|revoke``: the gateway's virtual API keys, kept hashed in KV
(``actors.gateway.keys``). The key itself is printed once, by ``create``, and never stored."""

from __future__ import annotations

from typing import Annotated, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, err, group, iso, load_settings, on_fleet, out, print_json,
                               write_out)
from bus import messages as m
from bus import names

app = group()
keys_app = group(help="the HTTP gateway's API keys (virtual keys: user, tier, rate, budget)", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="requests made with the key ask as this user (budgets, cost reports)")],
    tier: Annotated[Optional[str], typer.Option(help="… in this tier")] = None,
    rpm: Annotated[Optional[int], typer.Option(min=1, help="requests per minute (default gateway.rpm)")] = None,
    budget: Annotated[Optional[float], typer.Option(min=0.0, metavar="USD", help="the user's budget per day (UTC), "
                                                    "set with the cost actor")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Make a key and print it (once: only its SHA-256 is kept)."""
    for value, what, kind in ((user, "--user", "label"), (tier, "--tier", "token")):
        if value is not None and (bad := names.problem(value, what, kind)):
            raise typer.BadParameter(bad)
    settings = load_settings(ctx, config, nats_url)
    from actors.gateway import keys

    async def work(client):
        key, record = await keys.create(client.nc, client.subjects, user=user, tier=tier, rpm=rpm, budget_usd_day=budget)
        budget_reply = None
        if budget is not None:
            from bus.deadline import deadline_in
            from bus.subjects import COST_BUDGET_SET

            budget_reply = await client.rpc.service(
                COST_BUDGET_SET, m.BudgetSet(scope="user", name=user, period="day", limit_usd=budget),
                deadline=deadline_in(2_000))
        return key, record, budget_reply

    key, record, budget_reply = on_fleet(settings, work, json_out=json_out)
    if json_out:
        print_json({"key": key, **msgspec.to_builtins(record)})
    else:
        write_out(key)
        err.print(f"key {record.id}: user {record.user}, tier {record.tier or '(default)'}; shown once — "
                  "use it as the API key (Authorization: Bearer …)", markup=False)
    if type(budget_reply) is m.Failure:
        err.print(f"the key works, but its budget was not set: {budget_reply.kind}: {budget_reply.message} "
                  f"(retry with `llmbus budget set {budget} --user {user}`)", style="yellow", markup=False)
        raise typer.Exit(1)


@keys_app.command("list")
def list_keys(ctx: typer.Context, json_out: JsonOpt = False, nats_url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """Every key in KV (ids, never the keys), and those of [[gateway.keys]] in config."""
    settings = load_settings(ctx, config, nats_url)
    from actors.gateway import keys

    async def work(client):
        return await keys.stored(client.nc, client.subjects)

    stored = sorted(on_fleet(settings, work, json_out=json_out).values(), key=lambda k: k.created_at)
    configured = [{"user": k.user, "tier": k.tier, "rpm": k.rpm, "from": k.key_env and f"${k.key_env}" or "sha256"}
                  for k in settings.gateway.keys]
    if json_out:
        print_json({"keys": msgspec.to_builtins(stored), "configured": configured})
        return
    table = Table(title="llmbus keys")
    for col in ("id", "user", "tier", "rpm", "budget/day", "created", "state"):
        table.add_column(col)
    for k in stored:
        table.add_row(k.id, escape(k.user), escape(k.tier or "—"), str(k.rpm or settings.gateway.rpm),
                      "—" if k.budget_usd_day is None else f"${k.budget_usd_day:g}", iso(k.created_at),
                      "[red]revoked[/red]" if k.revoked else "[green]active[/green]")
    for k in configured:
        table.add_row("(config)", escape(k["user"]), escape(k["tier"] or "—"), str(k["rpm"] or settings.gateway.rpm),
                      "—", "—", escape(k["from"]))
    out.print(table)


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="the key's id (from `llmbus keys list`) or a prefix of it")],
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key: requests with it are refused with 403 from then on (every gateway watches KV)."""
    settings = load_settings(ctx, config, nats_url)
    from actors.gateway import keys

    async def work(client):
        return await keys.revoke(client.nc, client.subjects, key_id)

    record = on_fleet(settings, work, json_out=json_out)
    if record is None:
        failure = m.Failure(kind=m.BAD_REQUEST, message=f"no single key has the id {key_id!r} (llmbus keys list)")
        if json_out:
            print_json(failure)
        else:
            err.print(f"{failure.kind}: {failure.message}", markup=False)
        raise typer.Exit(2)
    if json_out:
        print_json(record)
    else:
        err.print(f"key {record.id} (user {record.user}) revoked", markup=False)
