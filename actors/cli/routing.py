"""``llmbus tiers``: the effective tier matrix — one column per tier, one row per setting — as the
routers of this config would apply it (the environment switches included). ``llmbus experiments``:
per experiment and arm, what the routers recorded in the events stream; ``llmbus experiments set``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, exit_code, group, load_settings, on_fleet, one_request,
                               out, print_failure, printed_as_json, write_out)
from actors.pure.experiment import summarize
from actors.routing_settings import TierSettings, multi_llm
from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.subjects import CONTROL_EXPERIMENT

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


# --- llmbus experiments ---------------------------------------------------------------------------

experiments_app = group(help="experiments ([experiments.<name>]): rollout, A/B, shadow", invoke_without_command=True)
app.add_typer(experiments_app, name="experiments")


async def read_events(nc, stream: str, subject: str, *, limit: int = 200_000) -> list[m.ExperimentEvent]:
    """Every ExperimentEvent kept on ``subject`` (an ephemeral pull consumer from the first one)."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    js = nc.jetstream()
    try:
        sub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0))
    except NotFoundError:
        return []  # no events stream yet: nothing happened
    decode = codec.decoder(m.ExperimentEvent).decode
    events: list[m.ExperimentEvent] = []
    try:
        left = min(limit, (await sub.consumer_info()).num_pending)
        while left > 0:
            for msg in await sub.fetch(min(left, 1000), timeout=5.0):
                left -= 1
                try:
                    events.append(decode(msg.data))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass  # not ours (a newer peer's, a forged one): skipped
    finally:
        await sub.unsubscribe()
    return events


def _gather(client):
    async def work(client):
        live = await client.rpc.service(CONTROL_EXPERIMENT, m.ExperimentQuery(), deadline=deadline_in(2_000))
        stream = client.subjects.events_stream
        events = await read_events(client.nc, stream, f"{client.subjects.root}.events.experiment.>")
        events += await read_events(client.nc, stream, f"{client.subjects.root}.events.shadow.>")
        return live, summarize(events)

    return work(client)


@experiments_app.callback()
def experiments(ctx: typer.Context, json_out: JsonOpt = False, nats_url: UrlOpt = None,
                config: ConfigOpt = None) -> None:
    """Per experiment and arm (control, variant, shadow): asks, success rate, latency p50/p95, cost,
    and for shadows the agreement with the answer returned (same data / text similarity), from the
    events the routers keep in the events stream; and the fallback routes that answered."""
    if ctx.invoked_subcommand is not None:
        return
    live, rows = on_fleet(load_settings(ctx, config, nats_url), _gather, json_out=json_out)
    if isinstance(live, m.Failure):
        print_failure(live)
        raise typer.Exit(exit_code(live))
    if json_out:
        write_out(json.dumps({"experiments": msgspec.to_builtins(live.experiments), "arms": rows,
                              "routes": live.routes, "router": live.router}))
        return
    if not live.experiments:
        out.print("no [experiments.*] configured on the fleet's routers")
    for e in live.experiments:
        kind = "shadow" if e.shadow else "rollout"
        write_out(f"{e.name}: {kind} of {e.strategy} for {e.percent:g} % of users"
                  + ("" if e.percent == e.configured else f" (config: {e.configured:g} %)"))
    if rows:
        table = Table(title="llmbus experiments (from the events stream)")
        for col in ("experiment", "arm", "strategy", "asks", "success", "p50 ms", "p95 ms", "cost USD",
                    "agreement"):
            table.add_column(col, justify="left" if col in ("experiment", "arm", "strategy") else "right")
        for r in rows:
            table.add_row(escape(r["experiment"]), r["arm"], escape(r["strategy"]), str(r["asks"]),
                          f"{r['success_rate']:.1%}", _ms(r["p50_ms"]), _ms(r["p95_ms"]),
                          "unknown" if r["cost_usd"] is None else f"{r['cost_usd']:.6f}",
                          "—" if r["agreement"] is None else f"{r['agreement']:.3f} ({r['compared']})")
        out.print(table)
    if live.routes:
        write_out("fallback routes that answered (router " + live.router + "): "
                  + ", ".join(f"{k} {v}" for k, v in live.routes.items()))


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


@experiments_app.command("set")
def experiments_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the experiment ([experiments.<name>])")],
    percent: Annotated[Optional[float], typer.Option("--percent", "-p", min=0.0, max=100.0,
                                                     help="users in the variant (shadow: shadowed)")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="back to the config's percent")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set an experiment's rollout percent live (kept in KV: every router picks it up at once)."""
    if (percent is None) == (not clear):
        raise typer.BadParameter("give --percent P or --clear")
    report = one_request(load_settings(ctx, config, nats_url), CONTROL_EXPERIMENT,
                         m.ExperimentSet(name=name, percent=None if clear else percent), json_out=json_out)
    if printed_as_json(report, json_out, "router"):
        return
    for e in report.experiments:
        if e.name == name:
            write_out(f"{e.name}: {e.percent:g} % (config: {e.configured:g} %)")
