"""``llmbus providers`` (what the fleet's provider actors say about themselves) and ``llmbus schema``
(the JSON Schema of any wire or report type, for programs that read ``--json``)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, err, group, load_settings, on_fleet, out, print_json
from bus import messages as m
from actors.copies import fleet_health

app = group()


class ProviderRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``llmbus providers --json``."""

    name: str
    kind: str | None = None  # None: no actor of it runs, so nothing says
    model: str | None = None
    running: int = 0  # copies of its actor answering discovery
    configured: bool = False  # an actor runs: it is configured where it runs (it starts only then)
    state: str | None = None  # its breaker, from the health actor (None: no health actor answered)


class ProvidersReport(msgspec.Struct, frozen=True, kw_only=True):
    providers: list[ProviderRow] = []


async def discover(client, *, quiet_s: float = 0.15, within_s: float = 1.0, verb: str = "INFO") -> list[dict]:
    """Every actor's ``$SRV.INFO`` (or ``$SRV.<verb>``: ``STATS``) under the client's root (replies
    gathered until ``quiet_s`` of silence after the first, or ``within_s``)."""
    import anyio

    nc = client.nc
    inbox = nc.new_inbox()
    replies: list[dict] = []
    got = anyio.Event()

    async def on_info(msg) -> None:
        try:
            replies.append(json.loads(msg.data))
        except ValueError:
            return
        got.set()

    sub = await nc.subscribe(inbox, cb=on_info)
    try:
        await nc.publish(f"$SRV.{verb}", b"", reply=inbox)
        with anyio.move_on_after(within_s):
            await got.wait()
            seen = -1
            while seen != len(replies):
                seen = len(replies)
                await anyio.sleep(quiet_s)
    finally:
        await sub.unsubscribe()
    prefix = client.subjects.root + "-"
    return [r for r in replies if str(r.get("name", "")).startswith(prefix)]


@app.command()
def providers(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The fleet's providers: kind and model as each provider actor reports it, how many copies run,
    and breaker state. A provider with no actor running is not configured where the actors run (a
    real provider's actor starts only where its API key is set)."""
    settings = load_settings(ctx, config, nats_url)
    from bus.deadline import deadline_in

    async def gather(client):
        infos = await discover(client)
        health = await fleet_health(client, m.HealthQuery())
        return infos, health

    infos, health = on_fleet(settings, gather, json_out=json_out)
    states = {p.breaker.provider: p.breaker.state for p in health.providers} if isinstance(health, m.HealthReport) else {}
    running: dict[str, list[dict]] = {}
    for info in infos:
        meta = info.get("metadata") or {}
        if meta.get("kind") == "provider" and meta.get("provider"):
            running.setdefault(meta["provider"], []).append(meta)
    names = list(dict.fromkeys([*states, *sorted(running)]))
    rows = []
    for name in names:
        copies = running.get(name, [])
        meta = copies[0] if copies else {}
        rows.append(ProviderRow(name=name, kind=meta.get("provider_kind") or None, model=meta.get("model") or None,
                                running=len(copies), configured=bool(copies), state=states.get(name)))
    report = ProvidersReport(providers=rows)
    if json_out:
        print_json(report)
        return
    table = Table(title="llmbus providers — as the fleet's provider actors report them")
    for col in ("provider", "kind", "model", "actors", "configured", "breaker"):
        table.add_column(col)
    for r in rows:
        configured = "yes" if r.configured else "[dim]no actor runs (set its API key where the actors run)[/dim]"
        table.add_row(escape(r.name), escape(r.kind or "—"), escape(r.model or "—"), str(r.running), configured,
                      escape(r.state or "—"))
    out.print(table)
    if not isinstance(health, m.HealthReport):
        err.print("no health actor answered: breaker states unknown", markup=False)


def schema_types() -> dict[str, type]:
    """Every wire and report type by name: the Structs of ``bus.messages`` and the CLI's reports."""
    from actors.cli.health import StatusReport

    found = {name: obj for name, obj in vars(m).items()
             if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and not name.startswith("_")}
    found.update(ProvidersReport=ProvidersReport, StatusReport=StatusReport)
    return dict(sorted(found.items()))


@app.command()
def schema(
    type_name: Annotated[Optional[str], typer.Argument(metavar="TYPE", help="a type name (omit to list them)")] = None,
) -> None:
    """Print the JSON Schema of a wire or report type (``Answer``, ``Failure``, ``HealthReport``,
    ``StatusReport`` …), so programs can validate what ``--json`` prints. With no TYPE, list them."""
    types = schema_types()
    if type_name is None:
        sys_out = "\n".join(types)
        typer.echo(sys_out)
        return
    cls = types.get(type_name)
    if cls is None:
        raise typer.BadParameter(f"no type {type_name!r}; known: {', '.join(types)}", param_hint="TYPE")
    typer.echo(json.dumps(msgspec.json.schema(cls), indent=2))
