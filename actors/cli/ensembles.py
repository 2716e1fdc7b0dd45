"""``llmbus reliability`` (what consensus has learned about each provider) and ``llmbus feedback``
(a label for one field of a consensus answer, which sharpens it).

Both read and write the KV buckets every router shares (``actors.router.reliability``):
``reliability`` reads ``<root>_reliability``; ``feedback`` reads the ask's remembered answers from
``<root>_answers`` and adds each provider's labelled answer to its counts by compare-and-set, so
every router votes with it at once (their watch), and it survives restarts.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, err, group, load_settings, on_fleet, out, print_json
from bus import messages as m

app = group()


async def learned(client) -> dict:
    """What consensus has learned (``actors.router.reliability.summary``), read from the fleet's KV."""
    from actors.router.reliability import read_all, summary

    return summary(await read_all(client.nc, client.subjects))


def print_learned(report: dict) -> None:
    """The compact form ``llmbus status --detailed`` prints: one line per provider."""
    for name, p in report.items():
        fields = ", ".join(f"{f} {v['accuracy']:.2f}" for f, v in p["fields"].items())
        err.print(f"reliability {name}: {p['overall']:.2f} overall (weight {p['weight']:.0f}); {fields}"
                  " — `llmbus reliability` for more", markup=False)


@app.command()
def reliability(
    ctx: typer.Context,
    provider: Annotated[Optional[str], typer.Argument(help="one provider (default: all)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Each provider's learned reliability per field (consensus weights, shared by every router):
    accuracy, the weight of evidence behind it, labelled answers, and stated-confidence calibration."""
    settings = load_settings(ctx, config, nats_url)
    report = on_fleet(settings, learned, json_out=json_out)
    if provider is not None:
        report = {p: v for p, v in report.items() if p == provider}
    if json_out:
        print_json({"providers": report})
        return
    if not report:
        err.print("no reliability learned yet" + (f" for {provider}" if provider else "")
                  + ": consensus asks teach it (`llmbus ask --strategy consensus --schema …`)", markup=False)
        return
    table = Table(title="llmbus reliability — learned accuracy per provider and field")
    for col in ("provider", "field", "accuracy", "weight", "labelled (right)"):
        table.add_column(col, justify="left" if col in ("provider", "field") else "right")
    for name, p in report.items():
        table.add_row(escape(name), "[b](all)[/b]", f"{p['overall']:.3f}", f"{p['weight']:.1f}", "")
        for field, f in p["fields"].items():
            labelled = f"{f['labelled']} ({f['labelled_right']})" if f["labelled"] else "—"
            table.add_row("", escape(field), f"{f['accuracy']:.3f}", f"{f['weight']:.1f}", labelled)
    out.print(table)
    for name, p in report.items():
        bins = ", ".join(f"{_bin_name(int(b))}: {v:.2f}" for b, v in p["calibration_bins"].items() if v is not None)
        if bins:
            err.print(f"{name} calibration (stated confidence → how often right): {bins}", markup=False)


def _bin_name(b: int) -> str:
    from actors.pure.vote import BINS

    if b < 0:
        return "none stated"
    low = BINS[b - 1] if b > 0 else 0.0
    high = BINS[b] if b < len(BINS) else 1.0
    return f"{low:.2f}–{high:.2f}"


@app.command()
def feedback(
    ctx: typer.Context,
    ask_id: Annotated[str, typer.Argument(help="the id of a consensus ask (Answer.id, `llmbus ask --json`)")],
    field: Annotated[list[str], typer.Option("--field", "-f", help="NAME=VALUE, the right value of one field "
                                                                    "(repeatable)")],
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Label fields of a consensus answer with their right values: each provider that answered them
    is counted right or wrong (a label weighs 5 answers judged by agreement)."""
    labels = {}
    for item in field:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise typer.BadParameter(f"{item!r}: give NAME=VALUE", param_hint="--field")
        labels[name.strip()] = value
    settings = load_settings(ctx, config, nats_url)
    from actors.router.reliability import feedback as apply

    async def send(client):
        try:
            return await apply(client.nc, client.subjects, ask_id, labels)
        except LookupError:
            return m.Failure(kind=m.BAD_REQUEST, message=f"no consensus ask {ask_id!r} is remembered (asks are kept "
                             "7 days; only consensus and self_consistency asks)")
        except KeyError as exc:
            return m.Failure(kind=m.BAD_REQUEST, message=f"ask {ask_id!r} has no field {exc.args[0]!r}")
        except FileExistsError as exc:
            return m.Failure(kind=m.BAD_REQUEST, message=f"ask {ask_id!r}: already labelled: {exc} (a label counts once)")

    result = on_fleet(settings, send, json_out=json_out)
    if json_out:
        print_json(result)
    if isinstance(result, m.Failure):
        if not json_out:
            err.print(f"{result.kind}: {result.message}", markup=False)
        raise typer.Exit(2)
    if json_out:
        return
    table = Table(title=f"llmbus feedback {escape(ask_id)}")
    for col in ("field", "provider", "answered", "verdict"):
        table.add_column(col)
    for row in result["answers"]:
        table.add_row(escape(row["field"]), escape(row["provider"]), escape(str(row["value"])),
                      "[green]right[/green]" if row["right"] else "[red]wrong[/red]")
    out.print(table)
    err.print(f"{len(result['answers'])} labelled answers added to the shared reliability", markup=False)
