"""``llmbus alerts [--active]`` and ``llmbus failures [--since] [--by provider|kind|route]``.

Both read the events stream (``<ROOT>_EVENTS``) with an ephemeral pull consumer filtered to their
subjects: ``alerts`` the ``Alert`` events the health actor published (the latest state of each
(rule, subject, since): firing or resolved), ``failures`` every failed provider call (``Outcome``
with its kind and message) plus, when the recording is on (``[record]``), every ``Failure`` reply
in the record stream with its ask id and route — the context of each failure.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Annotated, Literal, Optional

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, group, iso, load_settings, on_fleet, out, print_json
from bus import messages as m
from bus.subjects import Subjects

app = group()
SinceOpt = Annotated[Optional[float], typer.Option(min=0.0, help="only the last SECONDS (default: all kept)")]


async def read_subject(nc, stream: str, subject: str, *, since_s: float | None = None, limit: int = 100_000) -> list:
    """(store time, data, headers) of each message of ``subject`` in ``stream``, oldest first."""
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    js = nc.jetstream()
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return []
    if since_s is None:
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0,
                                mem_storage=True, filter_subject=subject)
    else:
        start = dt.datetime.fromtimestamp(time.time() - since_s, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_TIME,
                                opt_start_time=start, inactive_threshold=30.0, mem_storage=True,
                                filter_subject=subject)
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    got = []
    try:
        while len(got) < limit:
            try:
                msgs = await psub.fetch(batch=1024, timeout=0.5)
            except (NatsTimeoutError, TimeoutError):
                break
            got.extend((msg.metadata.timestamp.timestamp(), msg.data, dict(msg.headers or {})) for msg in msgs)
            if not msgs or msgs[-1].metadata.num_pending == 0:
                break
    finally:
        try:
            await psub.unsubscribe()
        except Exception:  # noqa: S110 — the ephemeral consumer goes after inactive_threshold anyway
            pass
    return got


_alert = msgspec.json.Decoder(m.Alert)


async def read_alerts(nc, subjects: Subjects, *, since_s: float | None = None) -> list[m.Alert]:
    """The latest event of each alert (rule, subject, since), newest first."""
    latest: dict[tuple, m.Alert] = {}
    for _, data, _ in await read_subject(nc, subjects.events_stream, subjects.alert_event, since_s=since_s):
        try:
            alert = _alert.decode(data)
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
    table = Table(title="llmbus alerts" + (" — active" if active else ""))
    for col in ("state", "severity", "rule", "subject", "value", "threshold", "since", "message"):
        table.add_column(col)
    for a in found:
        table.add_row("resolved" if a.resolved else "FIRING", a.severity, a.rule, escape(a.subject), f"{a.value:g}",
                      f"{a.threshold:g}", iso(a.since), escape(a.message),
                      style=None if a.resolved else ("bold red" if a.severity == "critical" else "yellow"))
    out.print(table)
    if not found:
        out.print("no alerts" + (" firing" if active else ""), markup=False)


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
    from bus.deadline import ASK_ID_HEADER

    lines = []
    for at, data, _ in await read_subject(nc, subjects.events_stream, subjects.outcome(">"), since_s=since_s):
        try:
            event = _outcomes.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        for o in event.items if isinstance(event, m.Outcomes) else [event]:
            if not o.ok:
                lines.append(FailureLine(at=o.at or at, source="event", provider=o.provider, kind=o.kind or m.INTERNAL,
                                         message=o.detail))
    for at, data, headers in await read_subject(nc, subjects.record_stream, ">", since_s=since_s):
        if b'"Failure"' not in data:
            continue
        try:
            f = _failure.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        lines.append(FailureLine(at=at, source="recording", provider=f.provider or "-", kind=f.kind, message=f.message,
                                 ask_id=headers.get(ASK_ID_HEADER, ""),
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
