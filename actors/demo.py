"""`llmbus demo`: the embedded stack, asks through every strategy and a few faults, one row each."""

from __future__ import annotations

from dataclasses import dataclass

from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in, now
from bus.rpc import new_id
from actors.settings import Settings
from actors.stack import embedded


@dataclass
class Row:
    label: str
    strategy: str
    path: str
    ms: float
    outcome: str
    cost_usd: float | None = None


def _cases(settings: Settings) -> list[tuple[str, str, list[str] | None, int]]:
    """(label, strategy, providers or None for the configured order, budget_ms)."""
    order = settings.provider_order()
    names = [n for n in settings.providers if settings.providers[n].missing_key() is None]
    cases = [(f"single → {order[0]}", "single", None, 5_000)]
    cases.append(("failover, configured order", "failover", None, 5_000))
    flaky = [n for n in names if settings.providers[n].failures and "stall" not in settings.providers[n].failures]
    stalled = [n for n in names if "stall" in settings.providers[n].failures]
    healthy = [n for n in names if not settings.providers[n].failures]
    if flaky and healthy:
        for i in range(3):
            cases.append((f"failover, flaky first #{i + 1}", "failover", [flaky[0], healthy[0]], 5_000))
    if stalled and healthy:
        cases.append(("failover past a stalled provider", "failover", [stalled[0], healthy[0]], 600))
    cases.append(("cache: a new question", "single", None, 5_000))
    cases.append(("cache: the same question again", "single", None, 5_000))
    cases.append(("unknown strategy", "nope", None, 5_000))
    cases.append(("budget too small (1 ms)", "failover", None, 1))
    return cases


async def run_demo(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    async with embedded(settings) as stack:
        async with Client(stack.url, root=settings.bus.root, name="llmbus-demo") as client:
            run = new_id()  # cache rows ask a question no earlier demo asked
            for label, strategy, providers, budget_ms in _cases(settings):
                cached = label.startswith("cache:")
                ask = m.Ask(
                    id=new_id(),
                    messages=[m.Message(role="user", content=f"demo {run}: cache" if cached else f"demo: {label}")],
                    strategy=strategy,
                    providers=providers,
                    budget_ms=budget_ms,
                    cache="use" if cached else "skip",
                )
                started = now()
                reply = await client.send(ask, deadline=deadline_in(budget_ms))
                ms = (now() - started) * 1000.0
                path = " → ".join(f"{s.provider}:{s.outcome}" for s in reply.route) or "—"
                outcome = "answer" if isinstance(reply, m.Answer) else f"{reply.kind}"
                cost = reply.cost_usd if isinstance(reply, m.Answer) else None
                rows.append(Row(label, strategy, path, ms, outcome, cost))
    return rows
