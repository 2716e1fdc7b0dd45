"""The ``core`` section of ``llmbus bench``: llmbus against a bare nats-py floor, measured in the
same run, one-process and multi-process.

Paths, each measured for sequential p50/p99 latency and for throughput at N asks in flight:

- ``bare one-hop``: a raw muxed requester → a responder whose callback republishes the payload.
- ``bare two-hop``: client → the minimal raw router → the minimal raw provider
  (``actors.bench.bare``).
- ``llmbus single`` / ``llmbus failover``: client → ``Router`` → ``MockProvider`` with 0 ms latency;
  failover first meets a provider that always answers ``unavailable`` (every answer's route is
  checked to show it).

Client side: both two-hop paths use exactly the same code, ``Client.send`` with a prepared ``Ask``
(only a fresh id per ask) — the bare router serves ``bench-bare.ask`` and answers an ``Answer``, so
the comparison isolates the router/provider side. Two layouts: every role in this process (one
event loop), and router and providers each in their own process (llmbus: ``llmbus actor …``;
bare: ``python -m actors.bench _bare <role> URL``), on the bench's event loop (asyncio or uvloop).
llmbus providers keep their outcome/usage events in JetStream as in production, the bare provider
publishes none. The router's dedup table fills up over the run, as it would under sustained load.

Its figures are the top level of a loop's result: ``layouts`` (per layout, per path), ``ratios``
(llmbus / bare two-hop) and ``failover_adds_ms``.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack
from dataclasses import asdict

import anyio
from rich.console import Console
from rich.table import Table

from bus import messages as m
from bus.client import Client
from bus.connection import connect
from bus.subjects import Subjects
from actors.bench.bare import ASK, BARE, bare_role, one_hop, ping_subject
from actors.bench.measure import (
    CONFIG, PROMPT, Plan, Progress, Send, client_send, flat, goal, label, measure, over, show, spawn, wait_ready,
)
from actors.runtime import run_actors
from actors.settings import parse
from actors.stack import build_actors

ROOT = Subjects("bench")
LAYOUTS = ("one-process", "multi-process")
PATHS = ("bare one-hop", "bare two-hop", "llmbus single", "llmbus failover")
ASKS = {  # the prepared Ask of each two-hop path (a fresh id per ask)
    "bare two-hop": ASK,
    "llmbus single": m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"]),
    "llmbus failover": m.Ask(id="", messages=PROMPT, strategy="failover", providers=["fail", "zero"]),
}
FULL, QUICK = Plan(), Plan(warmup=20, samples=100, seconds=0.5, rounds=1, concurrency=(64,))


def failed_over(answer: m.Answer) -> bool:
    return [(s.provider, s.outcome) for s in answer.route] == [("fail", m.UNAVAILABLE), ("zero", "ok")]


async def measure_layout(url: str, layout: str, plan: Plan, *, paths=PATHS, uvloop: bool = False,
                         progress: Progress = lambda s: None) -> dict[str, dict]:
    """Start what ``paths`` need in ``layout``, measure each path, stop everything: {path: figures}."""
    bare = (["provider"] if any(p.startswith("bare") for p in paths) else []) + (
        ["router"] if "bare two-hop" in paths else [])
    names = ["router", "provider.zero", *(["provider.fail"] if "llmbus failover" in paths else [])]
    names = names if any(p.startswith("llmbus") for p in paths) else []
    async with AsyncExitStack() as stack:  # unwinds: clients, subprocesses, then in-process roles
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        if layout == "one-process":
            for role in bare:
                await tg.start(bare_role, role, url)
            if names:
                built = build_actors(parse(CONFIG, "actors.bench").check(), names)
                await tg.start(run_actors, built, url)
        else:
            config = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".toml"))
            config.write(CONFIG)
            config.flush()
            nc = await connect(url, name="bench-ready")
            stack.push_async_callback(nc.close)
            procs = [(ping_subject(r), spawn(["actors.bench", "_bare", r, url], uvloop, stack))
                     for r in bare]
            procs += [(f"$SRV.PING.{ROOT.root}-{n.replace('.', '-')}",
                       spawn(["actors.cli", "actor", n, "--nats-url", url, "--config", config.name], uvloop, stack))
                      for n in names]
            for subject, proc in procs:
                await wait_ready(nc, subject, proc)
        progress(f"{layout}: ready; measuring {', '.join(paths)}")
        sends: dict[str, Send] = {}
        for p in paths:
            if p == "bare one-hop":
                sends[p] = await one_hop(url, stack)
            else:
                client = await stack.enter_async_context(
                    Client(url, root=(BARE if p.startswith("bare") else ROOT).root, name="bench-client"))
                sends[p] = client_send(client, ASKS[p], failed_over if p == "llmbus failover" else lambda a: True)
        results = await measure(sends, plan, lambda s: progress(f"{layout}: {s}"))
        for p, f in results.items():
            rates = ", ".join(f"@{c} {r:,.0f}/s" for c, r in f["asks_per_s"].items())
            progress(f"{layout} {p}: p50 {f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms, {rates}")
        if layout == "one-process" and names:  # usage goes as one acknowledged publish per batch
            outbox = next(a for a in built if a.name == "provider-zero").events.outbox
            progress(f"{layout}: usage events {outbox.sent_events:,} in {outbox.sent:,} JetStream publishes "
                     f"({outbox.sent_events / max(outbox.sent, 1):.1f} per publish), unacknowledged {len(outbox)}")
    return results


def compare(layouts: dict[str, dict[str, dict]]) -> dict:
    """Ratios (llmbus / bare two-hop), failover cost and goal checks for one loop's figures."""
    ratios, adds, goals = {}, {}, []
    for layout, fig in layouts.items():
        bare = flat(fig["bare two-hop"])
        ratios[layout] = {p: over(flat(fig[p]), bare) for p in ("llmbus single", "llmbus failover")}
        adds[layout] = round(fig["llmbus failover"]["p50_ms"] - fig["llmbus single"]["p50_ms"], 4)
        r = ratios[layout]["llmbus single"]
        goals.append(goal(f"{layout}: ask p50 ≤ 1.1× bare two-hop", r["p50_ms"], 1.1, "≤", "×"))
        for c in fig["llmbus single"]["asks_per_s"]:
            goals.append(goal(f"{layout}: throughput @{c} ≥ 0.8× bare", r[f"asks_per_s@{c}"], 0.8, "≥", "×"))
        goals.append(goal(f"{layout}: failover adds ≤ 1 ms over single", adds[layout], 1.0, "≤", " ms"))
    return {"ratios": ratios, "failover_adds_ms": adds, "goals": goals}


# --- the section interface (actors.bench.main) -------------------------------------------------


def describe(plan: Plan) -> dict:
    return asdict(plan)


async def run(url: str, plan: Plan, progress: Progress = lambda s: None) -> dict:
    """Both layouts; the children run on the same event loop as this process."""
    uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    layouts = {lay: await measure_layout(url, lay, plan, uvloop=uvloop, progress=progress) for lay in LAYOUTS}
    return {"layouts": layouts, **compare(layouts)}


def goals(result: dict) -> list[dict]:
    return result["goals"]


def failed(result: dict) -> int:
    return sum(f["failed"] for lay in result["layouts"].values() for f in lay.values())


def report(loop: str, result: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — {loop}",
                  caption="bare: the raw nats-py two-hop floor (one-hop: bare only); ratio: llmbus / bare")
    for col in ("layout", "path", "metric", "bare", "llmbus", "ratio"):
        table.add_column(col, justify="right" if col in ("bare", "llmbus", "ratio") else "left")
    for layout, fig in result["layouts"].items():
        for k, v in flat(fig["bare one-hop"]).items():
            table.add_row(layout, "one-hop", label(k), show(k, v), "", "")
        bare = flat(fig["bare two-hop"])
        for p in ("llmbus single", "llmbus failover"):
            for k, v in flat(fig[p]).items():
                table.add_row(layout, p.removeprefix("llmbus "), label(k),
                              show(k, bare[k]), show(k, v), f"{result['ratios'][layout][p][k]:.2f}×")
        table.add_section()
    console.print(table)
    for layout, ms in result["failover_adds_ms"].items():
        console.print(f"{layout}: failover adds {ms:.3f} ms over single (p50)", highlight=False)
