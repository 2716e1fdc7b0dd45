"""The ``priority`` section of ``llmbus bench``: premium asks while free asks overflow a full router.

One stack in this process under root ``bench-priority``: a router with few slots
(``max_concurrency``) and a bounded queue (``max_queued``, ``actors.admission``), one mock
provider with a fixed latency, so the router's capacity is slots / latency asks per second. Asks
arrive open loop (at a fixed rate, whether or not earlier ones were answered), in three phases:

- ``premium alone``: premium asks only, well under capacity — the bare path;
- ``with priority``: the same premium asks, and free asks at twice the capacity (tier priorities
  premium 2, free 0): premium asks go ahead of free ones in the queue and displace them;
- ``without priority``: the same load, every ask at priority 0 (``Ask.priority`` overrides the
  tier): first come first served, so premium asks overflow like free ones.

Figures per phase and tier: sent, answered, overloaded, timeouts, p50/p95 of the answered, p95 of
the ``overloaded`` replies (they must come at once). Goals: premium p95 with priority within 2× of
premium alone (+ one provider latency), every premium ask answered, free asks overflowing, and
free asks shed within 50 ms at p95 (the figures are one process's: client, router and provider share its loop,
so on a loaded machine the loop's lag shows in every figure). ``failed``: asks with no reply at all (none may be).
"""

from __future__ import annotations

import statistics
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
from rich.console import Console
from rich.table import Table

from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in, now
from actors.bench.measure import PROMPT, Progress, drop_jetstream, goal
from actors.runtime import run_actors
from actors.settings import parse
from actors.stack import build_actors

ROOT = "bench-priority"
BUDGET_MS = 3000
PHASES = ("premium alone", "with priority", "without priority")


@dataclass(frozen=True)
class Plan:
    seconds: float = 4.0  # per phase
    slots: int = 8  # the router's max_concurrency
    queued: int = 16  # its max_queued
    latency_ms: int = 60  # the provider's
    premium_share: float = 0.25  # premium rate, as a share of capacity
    free_over: float = 2.0  # free rate, as a multiple of capacity

    @property
    def capacity(self) -> float:
        return self.slots / (self.latency_ms / 1000.0)


FULL = Plan()
QUICK = Plan(seconds=0.6)


def config(plan: Plan) -> str:
    return f"""
[bus]
root = "{ROOT}"
[router]
strategy = "single"
providers = ["work"]
max_concurrency = {plan.slots}
max_queued = {plan.queued}
[providers.work]
latency = {{ dist = "fixed", ms = {plan.latency_ms} }}
[tiers.free]
priority = 0
[tiers.premium]
priority = 2
[cache]
enabled = false
[cost]
enabled = false
[health]
enabled = false
"""


def describe(plan: Plan) -> dict:
    return {"seconds": plan.seconds, "slots": plan.slots, "queued": plan.queued, "latency_ms": plan.latency_ms,
            "capacity_asks_per_s": plan.capacity, "premium_per_s": plan.premium_share * plan.capacity,
            "free_per_s": plan.free_over * plan.capacity}


async def paced(client: Client, rate: float, seconds: float, fields: dict, out: list) -> None:
    """Asks at ``rate`` per second for ``seconds``, open loop; each (outcome, ms) into ``out``."""

    async def one() -> None:
        request = client.build(PROMPT, cache="skip", budget_ms=BUDGET_MS, **fields)
        sent = now()
        with anyio.move_on_after(BUDGET_MS / 1000.0 + 2.0):
            reply = await client.send(request, deadline=deadline_in(BUDGET_MS))
            out.append(("ok" if isinstance(reply, m.Answer) else reply.kind, (now() - sent) * 1000.0))
            return
        out.append(("no reply", (now() - sent) * 1000.0))

    start, interval = now(), 1.0 / rate
    async with anyio.create_task_group() as tg:
        i = 0
        while (at := start + i * interval) < start + seconds:
            await anyio.sleep_until(at)
            tg.start_soon(one)
            i += 1


def p(ms: list[float], q: int) -> float | None:
    if len(ms) < 2:
        return round(ms[0], 3) if ms else None
    return round(statistics.quantiles(ms, n=100, method="inclusive")[q - 1], 3)


def figures(done: list) -> dict:
    ok = [ms for kind, ms in done if kind == "ok"]
    over = [ms for kind, ms in done if kind == m.OVERLOADED]
    return {"sent": len(done), "answered": len(ok), "overloaded": len(over),
            "timeout": sum(1 for kind, _ in done if kind == m.TIMEOUT),
            "other": sum(1 for kind, _ in done if kind not in ("ok", m.OVERLOADED, m.TIMEOUT)),
            "p50_ms": p(ok, 50), "p95_ms": p(ok, 95), "overloaded_p95_ms": p(over, 95)}


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    settings = parse(config(plan), "actors.bench.priority").check()
    premium_rate, free_rate = plan.premium_share * plan.capacity, plan.free_over * plan.capacity
    phases: dict[str, dict[str, dict]] = {}
    try:
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            actors = build_actors(settings, ["router", "provider.work"])
            stack.callback(lambda: [a.stop() for a in actors])  # a graceful stop: in-flight asks answered
            await tg.start(run_actors, actors, url)
            client = await stack.enter_async_context(Client(url, root=ROOT, name="bench-priority"))
            progress(f"priority: capacity {plan.capacity:.0f} asks/s ({plan.slots} slots × {plan.latency_ms} ms); "
                     f"premium {premium_rate:.0f}/s, free {free_rate:.0f}/s, {plan.seconds:g} s per phase")
            await paced(client, premium_rate, min(0.3, plan.seconds), {"tier": "premium"}, [])  # warm up
            for phase in PHASES:
                premium, free = [], []
                flat = {"priority": 0} if phase == "without priority" else {}
                async with anyio.create_task_group() as load:
                    load.start_soon(paced, client, premium_rate, plan.seconds, {"tier": "premium", **flat}, premium)
                    if phase != "premium alone":
                        load.start_soon(paced, client, free_rate, plan.seconds, {"tier": "free", **flat}, free)
                phases[phase] = {"premium": figures(premium), **({"free": figures(free)} if free else {})}
                f = phases[phase]["premium"]
                progress(f"priority: {phase}: premium p95 {f['p95_ms']} ms, answered {f['answered']}/{f['sent']}"
                         + (f"; free overloaded {phases[phase]['free']['overloaded']}/{phases[phase]['free']['sent']}"
                            if free else ""))
    finally:
        await drop_jetstream(url, [ROOT])
    alone, under = phases["premium alone"]["premium"], phases["with priority"]["premium"]
    return {
        "phases": phases,
        "premium_p95_with_over_alone": round(under["p95_ms"] / alone["p95_ms"], 3)
        if under["p95_ms"] and alone["p95_ms"] else None,
        "premium_p95_without_over_alone": round(phases["without priority"]["premium"]["p95_ms"] / alone["p95_ms"], 3)
        if phases["without priority"]["premium"]["p95_ms"] and alone["p95_ms"] else None,
        "latency_ms": plan.latency_ms,
        "failed": sum(tier.get("other", 0) for ph in phases.values() for tier in ph.values()),
    }


def goals(result: dict) -> list[dict]:
    phases = result["phases"]
    alone, under = phases["premium alone"]["premium"], phases["with priority"]["premium"]
    free = phases["with priority"]["free"]
    limit = 2.0 * alone["p95_ms"] + result["latency_ms"]
    over_p95 = free["overloaded_p95_ms"] or 0.0
    return [
        goal("priority: premium p95 under free overload ≤ 2× alone + one provider latency", under["p95_ms"] or 0.0,
             round(limit, 3), "≤", " ms"),
        goal("priority: premium asks answered under free overload", under["answered"] / max(1, under["sent"]),
             1.0, "≥", ""),
        goal("priority: free asks overflow (share answered overloaded)", free["overloaded"] / max(1, free["sent"]),
             0.01, "≥", ""),
        goal("priority: free asks shed at once under overload (p95)", over_p95, 50.0, "≤", " ms"),
    ]


def report(loop: str, result: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — priority — {loop}",
                  caption="open loop; ms; shed: answered overloaded (a full queue), at once")
    for col in ("phase", "tier", "sent", "ok", "shed", "timeout", "p50", "p95", "shed p95"):
        table.add_column(col, justify="left" if col in ("phase", "tier") else "right")
    for phase, tiers in result["phases"].items():
        for tier, f in tiers.items():
            table.add_row(phase, tier, str(f["sent"]), str(f["answered"]), str(f["overloaded"]), str(f["timeout"]),
                          _ms(f["p50_ms"]), _ms(f["p95_ms"]), _ms(f["overloaded_p95_ms"]))
    console.print(table)
    console.print(f"premium p95 under free overload: {result['premium_p95_with_over_alone']}× alone with priority, "
                  f"{result['premium_p95_without_over_alone']}× without", highlight=False)


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"
