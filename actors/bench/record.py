"""The ``record`` section of ``llmbus bench`` (only with ``--only record``): what recording costs.

Three stacks in this process, each a router and the ``zero``/``fail`` mock providers: root
``bench-rec-off`` (``[record] sampling = "off"``), ``bench-rec-all`` (``"all"``: the stream
``BENCH_REC_ALL_RECORD`` captures every request and reply, and replies carry their ask id
headers) and ``bench-rec-errors`` (``"errors"``: the router's recorder keeps a window per ask and
writes nothing, as every ask is answered). Paths ``single off|all|errors`` and ``failover …``
(failover: ``fail`` then ``zero``) take turns (``actors.bench.measure``). Reply headers are a
process-wide switch (``bus.endpoint.RECORDING``), so each path's send sets it for its own asks (a
throughput run is one path at a time).

For ``actors.bench.main``: ``run(url, plan, progress)`` → ``{"paths", "all_over_off", "errors_over_off", "failed"}``;
``goals(result)``: recording ``all`` costs ≤ 10 % throughput (issue 17); ``report``; ``FULL``/``QUICK``.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
from rich.console import Console
from rich.table import Table

from bus import endpoint
from bus import messages as m
from bus.client import Client
from actors.bench.measure import (PROMPT, Plan, Progress, Send, bench_settings, client_send, drop_jetstream,
                                  failed_asks, flat, goal, label, measure, over, route_is, show)
from actors.runtime import run_actors
from actors.settings import CacheSettings, HealthSettings, RecordSettings
from actors.stack import build_actors

ROOTS = {"off": "bench-rec-off", "all": "bench-rec-all", "errors": "bench-rec-errors"}
PATHS = tuple(f"{k} {mode}" for k in ("single", "failover") for mode in ROOTS)
FULL = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
QUICK = Plan(warmup=20, samples=200, seconds=0.6, rounds=2, concurrency=(64,))


def describe(plan: Plan) -> None:
    return None


def _switched(send: Send, on: bool) -> Send:
    async def go() -> bool:
        endpoint.RECORDING = on
        return await send()

    return go


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    was = endpoint.RECORDING
    try:
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            sends: dict[str, Send] = {}
            for mode, root in ROOTS.items():
                settings = bench_settings(root, cache=CacheSettings(enabled=False),
                                          health=HealthSettings(enabled=False),
                                          record=RecordSettings(sampling=mode, max_age_s=600.0, max_bytes=1 << 30))
                await tg.start(run_actors, build_actors(settings, ["router", "provider.zero", "provider.fail"]), url)
                client = await stack.enter_async_context(Client(url, root=root, name=f"bench-rec-{mode}"))
                single = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"])
                failover = m.Ask(id="", messages=PROMPT, strategy="failover", providers=["fail", "zero"])
                sends[f"single {mode}"] = _switched(client_send(client, single, route_is(("zero", "ok"))), mode != "off")
                sends[f"failover {mode}"] = _switched(client_send(client, failover), mode != "off")
            sends = {p: sends[p] for p in PATHS}
            progress("record: ready (recording off vs all); measuring")
            paths = await measure(sends, plan, lambda s: progress(f"record: {s}"))
    finally:
        endpoint.RECORDING = was
        await drop_jetstream(url, list(ROOTS.values()))
    ratios = {kind: over(flat(paths[f"{kind} all"]), flat(paths[f"{kind} off"])) for kind in ("single", "failover")}
    errors = {kind: over(flat(paths[f"{kind} errors"]), flat(paths[f"{kind} off"])) for kind in ("single", "failover")}
    return {"paths": paths, "all_over_off": ratios, "errors_over_off": errors, "failed": failed_asks(paths)}


def goals(result: dict) -> list[dict]:
    out = []
    for kind, r in result["all_over_off"].items():
        tput = next((v for k, v in r.items() if k.startswith("asks_per_s")), None)
        if tput is not None:
            out.append(goal(f"record all: {kind} throughput cost", round((1 - tput) * 100, 1), 10.0, "≤", "%"))
        errors = result.get("errors_over_off", {}).get(kind, {})
        tput = next((v for k, v in errors.items() if k.startswith("asks_per_s")), None)
        if tput is not None:
            out.append(goal(f"record errors: {kind} throughput cost", round((1 - tput) * 100, 1), 10.0, "≤", "%"))
    return out


def report(loop: str, result: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — record — {loop}",
                  caption="one process; all: every request and reply stored in <ROOT>_RECORD (file, no_ack)")
    for col in ("metric", *PATHS, "single all/off", "failover all/off", "single errors/off", "failover errors/off"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    figs = {p: flat(result["paths"][p]) for p in PATHS}
    for k in figs[PATHS[0]]:
        table.add_row(label(k), *(show(k, figs[p][k]) for p in PATHS),
                      f"{result['all_over_off']['single'][k]:.2f}×", f"{result['all_over_off']['failover'][k]:.2f}×",
                      f"{result['errors_over_off']['single'][k]:.2f}×", f"{result['errors_over_off']['failover'][k]:.2f}×")
    console.print(table)
