"""``llmbus trace ASK_ID``, ``llmbus asks``, ``llmbus replay ASK_ID``: what happened to an ask, from
the recording (``[record] sampling = "all"``) and the events stream (``actors.recording``)."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, group, iso, load_settings, on_fleet, out, print_json, write_out
from actors.cli.trace_tree import show_trace
from bus.subjects import Subjects

app = group()

SinceOpt = Annotated[Optional[float], typer.Option("--since", help="only the last this many seconds of the recording")]


@app.command("trace")
def trace_cmd(
    ctx: typer.Context,
    ask_id: Annotated[str, typer.Argument(help="the ask's id (`llmbus asks` lists them)")],
    since: SinceOpt = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """An ask's messages as a tree: router, cache, cost, each provider call, events — each with its
    start offset, duration and outcome. Read from the recording: works after every actor restarted."""
    show_trace(load_settings(ctx, config, nats_url), ask_id, since, json_out)


@app.command("asks")
def asks_cmd(
    ctx: typer.Context,
    since: SinceOpt = None,
    failed: Annotated[bool, typer.Option("--failed", help="only asks that failed")] = False,
    user: Annotated[Optional[str], typer.Option("--user")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Recent recorded asks (newest last): id, time, strategy, user, duration, outcome."""
    from actors import recording

    settings = load_settings(ctx, config, nats_url)
    subjects = Subjects(settings.bus.root)

    async def work(client):
        return recording.list_asks(subjects, await recording.read(client.nc, subjects.record_stream, since_s=since))

    lines = on_fleet(settings, work, json_out=json_out)
    lines = [a for a in lines if (not failed or a.failed) and (user is None or a.user == user)
             and (strategy is None or a.strategy == strategy)][-limit:]
    if json_out:
        print_json([dict(a.__dict__, at_iso=iso(a.at)) for a in lines])
        return
    table = Table(title=f"llmbus asks — {len(lines)} recorded under {settings.bus.root}")
    for col in ("ask id", "at", "strategy", "user", "duration", "outcome", "prompt"):
        table.add_column(col)
    for a in lines:
        table.add_row(escape(a.ask_id), iso(a.at), escape(a.strategy or "—"), escape(a.user or "—"),
                      "—" if a.duration_ms is None else f"{a.duration_ms:.1f} ms",
                      f"[{'red' if a.failed else 'green'}]{escape(a.outcome)}[/]", escape(a.prompt))
    out.print(table)


@app.command("replay")
def replay_cmd(
    ctx: typer.Context,
    ask_id: Annotated[str, typer.Argument(help="the recorded ask's id")],
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="replay with this strategy instead")] = None,
    live: Annotated[bool, typer.Option("--live", help="calls with no recording go to the live fleet's providers "
                                                      "(real calls, billed); without it they answer unavailable")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Re-run a recorded ask through a router under an isolated root, every provider call answered
    from the recording (no keys, no network); print the result and a diff against the recorded answer.
    Calls the recording has no reply for are named; only with --live do they reach live providers."""
    from actors.replay import replay, text_of

    settings = load_settings(ctx, config, nats_url)

    async def work(client):
        return await replay(client.nc, settings.bus.url, settings, ask_id, strategy=strategy, live=live)

    try:
        done = on_fleet(settings, work, json_out=json_out)
    except LookupError as exc:
        out.print(str(exc), markup=False)
        raise typer.Exit(1) from None
    if json_out:
        print_json({"ask_id": ask_id, "strategy": strategy, "same": done.same, "recorded": done.recorded,
                    "replayed": done.result, "served": done.served, "missing": done.missing, "live": done.live, "diff": done.diff()})
        return
    write_out(text_of(done.result))
    out.print(f"replayed {ask_id} under root {done.root} (strategy {strategy or 'as recorded'}); "
              f"recorded replies served: {done.served or 'none'}", markup=False)
    if done.missing:
        how = f"sent to the live providers: {done.live}" if live else "answered unavailable; --live sends them to the live providers"
        out.print(f"calls with no recording: {done.missing} ({how})", markup=False)
    out.print("identical to the recorded answer" if done.same else done.diff(), markup=False)


@app.command("tail")
def tail_cmd(
    ctx: typer.Context,
    subject: Annotated[Optional[str], typer.Argument(help="a subject under the root (default: everything, `>`)")] = None,
    count: Annotated[Optional[int], typer.Option("--count", min=1, help="stop after this many messages")] = None,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Live traffic under the root, one line per message: time, ask id, type, subject, size
    (a plain subscription: it sees what flows now, recorded or not)."""
    import anyio

    settings = load_settings(ctx, config, nats_url)
    root = settings.bus.root
    wanted = f"{root}.{subject.removeprefix(root + '.')}" if subject else f"{root}.>"

    async def work(client):
        from bus.deadline import ASK_ID_HEADER

        seen = 0
        done = anyio.Event()

        async def on(msg) -> None:
            nonlocal seen
            hdrs = msg.headers or {}
            kind = "?"
            head = msg.data[:64]
            at = head.find(b'"type":"')
            if at >= 0:
                kind = head[at + 8:head.find(b'"', at + 8)].decode("utf-8", "replace")
            write_out(f"{iso(time.time())} {hdrs.get(ASK_ID_HEADER, '-'):<20} {kind:<14} "
                      f"{msg.subject}{' → ' + msg.reply if msg.reply else ''} {len(msg.data)} B")
            seen += 1
            if count is not None and seen >= count:
                done.set()

        sub = await client.nc.subscribe(wanted, cb=on)
        try:
            await done.wait()
        finally:
            await sub.unsubscribe()

    try:
        on_fleet(settings, work)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
