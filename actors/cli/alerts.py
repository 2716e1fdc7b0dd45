"""``llmbus alerts [--active]`` and ``llmbus failures [--since] [--by provider|kind|route]``.

Both read the events stream (``<ROOT>_EVENTS``) filtered to their subjects (``actors.recording.read``): ``alerts`` the ``Alert`` events the health actor published (the latest state of each
(rule, subject, since): firing or resolved), ``failures`` every failed provider call (``Outcome``
with its kind and message) plus, when the recording is on (``[record]``), every ``Failure`` reply
in the record stream with its ask id and route — the context of each failure.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, group, iso, load_settings, on_fleet, out, print_json
from bus import messages as m
from bus.subjects import Subjects
from actors.recording import read

app = group()
SinceOpt = Annotated[Optional[float], typer.Option(min=0.0, help="only the last SECONDS (default: all kept)")]


_alert = msgspec.json.Decoder(m.Alert)


async def read_alerts(nc, subjects: Subjects, *, since_s: float | None = None) -> list[m.Alert]:
    """The latest event of each alert (rule, subject, since), newest first."""
    latest: dict[tuple, m.Alert] = {}
    for rec in await read(nc, subjects.events_stream, since_s=since_s, subject=subjects.alert_event):
        try:
            alert = _alert.decode(rec.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        latest[(alert.rule, alert.subject, round(alert.since, 3))] = alert
    return sorted(latest.values(), key=lambda a: a.at, reverse=True)


class AlertList(msgspec.Struct, frozen=True, kw_only=True):
    alerts: list[m.Alert] = []


@app.command()
def alerts(
    ctx: typer.Context,
    active: Annotated[bool, typer.Option("--active", help="only alerts still firing")] = False,
    since: SinceOpt = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Alerts the health actor raised ([alerts] rules): firing or resolved, newest first."""
    settings = load_settings(ctx, config, nats_url)

    async def work(client):
        return await read_alerts(client.nc, client.subjects, since_s=since)

    found = [a for a in on_fleet(settings, work, json_out=json_out) if not (active and a.resolved)]
    if json_out:
        print_json(AlertList(alerts=found))
        return
    if not found:
        out.print("no alerts" + (" firing" if active else "") + (f" in the last {since:g} s" if since else ""),
                  markup=False)
        return
    table = Table(title="llmbus alerts" + (" — active" if active else ""))
    for col in ("state", "severity", "rule", "subject", "value", "threshold", "since", "message"):
        table.add_column(col)
    for a in found:
        table.add_row("resolved" if a.resolved else "FIRING", a.severity, a.rule, escape(a.subject), f"{a.value:g}",
                      f"{a.threshold:g}", iso(a.since), escape(a.message),
                      style=None if a.resolved else ("bold red" if a.severity == "critical" else "yellow"))
    out.print(table)


class FailureLine(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    source: str  # "event" (a provider's Outcome) | "recording" (a Failure reply, with its ask)
    provider: str
    kind: str
    message: str
    ask_id: str = ""
    route: str = ""  # the providers tried, in order ("a>b>c"), when the failure says


class FailureReport(msgspec.Struct, frozen=True, kw_only=True):
    by: str
    counts: dict[str, int] = {}
    failures: list[FailureLine] = []


_outcomes = msgspec.json.Decoder(m.OutcomeEvent)
_failure = msgspec.json.Decoder(m.Failure)


async def read_failures(nc, subjects: Subjects, *, since_s: float | None = None) -> list[FailureLine]:
    lines = []
    for rec in await read(nc, subjects.events_stream, since_s=since_s, subject=subjects.outcome(">")):
        try:
            event = _outcomes.decode(rec.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        for o in event.items if isinstance(event, m.Outcomes) else [event]:
            if not o.ok:
                lines.append(FailureLine(at=o.at or rec.at, source="event", provider=o.provider, kind=o.kind or m.INTERNAL,
                                         message=o.detail))
    for rec in await read(nc, subjects.record_stream, since_s=since_s):
        if b'"Failure"' not in rec.data:
            continue
        try:
            f = _failure.decode(rec.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        lines.append(FailureLine(at=rec.at, source="recording", provider=f.provider or "-", kind=f.kind,
                                 message=f.message, ask_id=rec.ask_id or "",
                                 route=">".join(s.provider for s in f.route)))
    return sorted(lines, key=lambda x: x.at)


def group_failures(lines: list[FailureLine], by: str) -> dict[str, int]:
    key = {"provider": lambda x: x.provider, "kind": lambda x: x.kind, "route": lambda x: x.route or "-"}[by]
    return dict(Counter(key(x) for x in lines).most_common())


@app.command()
def failures(
    ctx: typer.Context,
    since: SinceOpt = None,
    by: Annotated[Literal["provider", "kind", "route"], typer.Option(help="count them by")] = "kind",
    last: Annotated[int, typer.Option(min=0, help="list this many of the latest")] = 20,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Failures with their context (ask id, route, kind, message), from the events and recordings."""
    settings = load_settings(ctx, config, nats_url)

    async def work(client):
        return await read_failures(client.nc, client.subjects, since_s=since)

    lines = on_fleet(settings, work, json_out=json_out)
    report = FailureReport(by=by, counts=group_failures(lines, by), failures=lines[-last:] if last else [])
    if json_out:
        print_json(report)
        return
    if not lines:
        out.print("no failures" + (f" in the last {since:g} s" if since else "")
                  + " (provider outcomes in the events stream; asks' failures when [record] is on)", markup=False)
        return
    table = Table(title=f"llmbus failures — by {by}")
    table.add_column(by)
    table.add_column("failures", justify="right")
    for key, n in report.counts.items():
        table.add_row(escape(key), str(n))
    out.print(table)
    if report.failures:
        recent = Table(title=f"latest {len(report.failures)}")
        for col in ("at", "source", "ask id", "provider", "route", "kind", "message"):
            recent.add_column(col)
        for x in report.failures:
            recent.add_row(iso(x.at), x.source, escape(x.ask_id or "-"), escape(x.provider), escape(x.route or "-"),
                           x.kind, escape(x.message[:120]))
        out.print(recent)
