"""The tree of an ask's trace (``actors.recording.Trace``) as rich draws it: ``llmbus trace`` prints
it, the dashboard's trace page exports it as HTML."""

from __future__ import annotations

from rich.markup import escape
from rich.tree import Tree


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
