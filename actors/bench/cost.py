"""The ``cost`` section of ``llmbus bench``: what budgets add to an ask.

One stack in this process under root ``bench-cost``: a router with cost on, the ``zero`` mock
provider (0 ms, priced from a temporary pricing file) and a cost actor. A budget is set for the
user ``budgeted`` (large enough never to refuse). Two paths take turns ask by ask, then round by
round (``actors.bench.measure``):

- ``no budget``: user ``free``, whose asks are priced (``Answer.cost_usd``) but need no round trip;
- ``budget``: user ``budgeted``: each provider call is preceded by a ``Reserve`` round trip to the
  cost actor (a compare-and-set on its KV key, group-committed under load) and followed by a
  ``Commit`` publish.

For ``actors.bench.main``: ``run(url, plan, progress)`` → ``{"paths", "budget_minus_free_p50_ms",
"budget_over_free", "failed"}``; ``goals(result)`` (none); ``report(loop, result, console)``; plans
``FULL`` / ``QUICK``.
"""

from __future__ import annotations

import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import msgspec
from rich.console import Console

from bus.subjects import COST_BUDGET_SET
from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in
from actors.bench.measure import (
    PROMPT, Plan, Progress, Send, bench_settings, client_send, drop_jetstream, failed_asks, flat, measure, over,
    paths_table, route_is, wait_for,
)
from actors.runtime import run_actors
from actors.settings import CacheSettings, CostSettings
from actors.stack import build_actors

ROOT = "bench-cost"
PATHS = ("no budget", "budget")
FULL = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
QUICK = Plan(warmup=20, samples=100, seconds=0.3, rounds=1, concurrency=(64,))
PRICES = '[mock."zero-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-11-25"\nsource = "bench"\n'


# --- the section interface (actors.bench.main) -------------------------------------------------


def describe(plan: Plan) -> None:
    return None  # not recorded in the bench's --json "plan"


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="llmbus-bench-cost-") as tmp:
        pricing = Path(tmp) / "pricing.toml"
        pricing.write_text(PRICES)
        settings = bench_settings(ROOT, cost=CostSettings(enabled=True, pricing=str(pricing)),
                                  cache=CacheSettings(enabled=False))
        try:
            async with AsyncExitStack() as stack:
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tg.cancel_scope.cancel)
                router, *_ = await tg.start(run_actors, build_actors(settings, ["router", "cost", "provider.zero"]), url)
                client = await stack.enter_async_context(Client(url, root=ROOT, name="bench-client"))
                reply = await client.rpc.service(
                    COST_BUDGET_SET, m.BudgetSet(scope="user", name="budgeted", period="day", limit_usd=1e9),
                    deadline=deadline_in(5000),
                )
                if not isinstance(reply, m.BudgetReport):
                    raise RuntimeError(f"cost: cannot set the budget: {reply}")
                await wait_for(lambda: ("user", "budgeted") in router.budgets.scoped, "the router sees the budget")
                base = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"])
                priced = lambda a: route_is(("zero", "ok"))(a) and (a.cost_usd or 0) > 0  # noqa: E731
                sends: dict[str, Send] = {
                    "no budget": client_send(client, msgspec.structs.replace(base, user="free"), priced),
                    "budget": client_send(client, msgspec.structs.replace(base, user="budgeted"), priced),
                }
                progress("cost: ready (user 'budgeted' has a budget, 'free' none); measuring")
                paths = await measure(sends, plan, lambda s: progress(f"cost: {s}"))
        finally:
            await drop_jetstream(url, [ROOT])
    free, budget = flat(paths["no budget"]), flat(paths["budget"])
    out = {
        "paths": paths,
        "budget_minus_free_p50_ms": round(budget["p50_ms"] - free["p50_ms"], 4),
        "budget_over_free": over(budget, free),
        "failed": failed_asks(paths),
    }
    progress(f"cost: p50 {free['p50_ms']:.3f} ms without a budget, {budget['p50_ms']:.3f} ms with one "
             f"({out['budget_minus_free_p50_ms']:+.3f} ms)")
    return out


def goals(result: dict) -> list[dict]:
    return []  # figures only


def report(loop: str, result: dict, console: Console) -> None:
    console.print(paths_table(
        f"llmbus bench — cost — {loop}",
        "one process; no budget: priced, no round trip; budget: Reserve round trip + Commit publish",
        {p: result["paths"][p] for p in PATHS}, {"budget / no budget": result["budget_over_free"]}))
    console.print(f"a budget adds {result['budget_minus_free_p50_ms']:+.3f} ms at p50 (one Reserve round trip)",
                  highlight=False)
