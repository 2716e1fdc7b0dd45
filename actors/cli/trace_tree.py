"""The tree ``llmbus trace ASK_ID`` prints, and the command's work once its options are read — without
typer (``actors.cli.quick`` runs a plain ``trace`` line without it: start-up time is a goal, issue 17)."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree

from actors.cli.common import on_fleet, out, print_json, typer_exit
from bus.subjects import Subjects


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"


def _style(outcome: str) -> str:
    return "green" if outcome.startswith("ok") or outcome == "sent" else "red"


def render(tr) -> Tree:
    t0 = tr.start
    ask = tr.ask
    head = f"ask [bold]{escape(tr.ask_id)}[/]"
    if ask is not None:
        head += f"  +0.0 ms  {_ms(ask.duration_s)}  [{_style(ask.outcome())}]{escape(ask.outcome())}[/]"
    tree = Tree(head)
    groups: dict[str, Tree] = {}
    for c in tr.calls:
        if c is ask:
            continue
        label = {"provider": "provider calls", "cache": "cache", "cost": "cost", "health": "health",
                 "supervisor": "supervisor"}.get(c.kind, c.kind)
        node = groups.get(label) or groups.setdefault(label, tree.add(f"[bold]{label}[/]"))
        node.add(f"{escape(c.name)}  +{(c.at - t0) * 1000:.1f} ms  {_ms(c.duration_s)}  "
                 f"[{_style(c.outcome())}]{escape(c.outcome())}[/]")
    if tr.events:
        ev = tree.add("[bold]events[/] (health, usage, experiments)")
        for e in tr.events:
            body = e.body()
            kind = body.get("type") if isinstance(body, dict) else "?"
            ev.add(f"{escape(e.subject)}  +{(e.at - t0) * 1000:.1f} ms  {escape(str(kind))}")
    return tree


def show_trace(settings, ask_id: str, since: float | None, json_out: bool) -> None:
    """``llmbus trace`` once its options are read (by typer, or by ``actors.cli.quick`` without it)."""
    from actors import recording

    subjects = Subjects(settings.bus.root)

    async def work(client):
        return await recording.trace(client.nc, subjects, ask_id, since_s=since)

    tr = on_fleet(settings, work, json_out=json_out, plain=True)
    if not tr.calls and not tr.events:
        out.print(f"no recording of ask {ask_id} under root {settings.bus.root} "
                  "(is [record] sampling = \"all\"? has it aged out?)", markup=False)
        raise typer_exit(1)
    if json_out:
        print_json(tr.as_json())
        return
    out.print(render(tr))
