"""The ``record`` section of ``llmbus bench`` (only with ``--only record``): what recording costs.

Three stacks in this process, each a router and the ``zero``/``fail`` mock providers: root
``bench-rec-off`` (``[record] sampling = "off"``), ``bench-rec-all`` (``"all"``: the stream
``BENCH_REC_ALL_RECORD`` captures every request and reply, and replies carry their ask id
headers) and ``bench-rec-errors`` (``"errors"``: the router's recorder keeps a window per ask and
writes nothing, as every ask is answered). Paths ``single off|all|errors`` and ``failover …``
(failover: ``fail`` then ``zero``) take turns (``actors.bench.measure``). Whether requests and
replies carry the recording's headers is a property of each root (``Subjects.recording``): the
clients here know none, as any client, so the routers' replies to them name their asks.

Then, on what ``all`` recorded (thousands of asks): ``llmbus trace`` of one ask as a person runs it
(a new process: start, imports, lookup, render; the best and the median of ``TRACE_RUNS``) and in
this process, and the replay of the last ``REPLAY_ASKS`` recorded asks (``actors.replay.replay_many``,
as ``scripts/replay.py --last 1000``).

For ``actors.bench.main``: ``run(url, plan, progress)`` → ``{"paths", "all_over_off", "errors_over_off",
"failed", "trace", "replay"}``; ``goals(result)``: recording ``all`` costs ≤ 10 % throughput, a trace
< 300 ms process start included, 1,000 asks replayed < 10 s (issue 17); ``report``; ``FULL``/``QUICK``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack

import anyio
from rich.console import Console

from bus import messages as m
from bus.client import Client
from actors.bench.measure import (
    PROMPT, Plan, Progress, Send, bench_settings, client_send, drop_jetstream, failed_asks, flat, goal, measure,
    over, paths_table, route_is,
)
from actors.runtime import run_actors
from actors.settings import CacheSettings, HealthSettings, RecordSettings
from actors.stack import build_actors

ROOTS = {"off": "bench-rec-off", "all": "bench-rec-all", "errors": "bench-rec-errors"}
TRACE_RUNS = 5
REPLAY_ASKS = 1000
PATHS = tuple(f"{k} {mode}" for k in ("single", "failover") for mode in ROOTS)
FULL = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
QUICK = Plan(warmup=20, samples=200, seconds=0.6, rounds=2, concurrency=(64,))


def describe(plan: Plan) -> None:
    return None


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    try:
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            sends: dict[str, Send] = {}
            settings_of = {}
            for mode, root in ROOTS.items():
                settings = settings_of[mode] = bench_settings(root, cache=CacheSettings(enabled=False),
                                          health=HealthSettings(enabled=False),
                                          record=RecordSettings(sampling=mode, max_age_s=600.0, max_bytes=1 << 30))
                await tg.start(run_actors, build_actors(settings, ["router", "provider.zero", "provider.fail"]), url)
                client = await stack.enter_async_context(Client(url, root=root, name=f"bench-rec-{mode}"))
                single = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"])
                failover = m.Ask(id="", messages=PROMPT, strategy="failover", providers=["fail", "zero"])
                sends[f"single {mode}"] = client_send(client, single, route_is(("zero", "ok")))
                sends[f"failover {mode}"] = client_send(client, failover)
            sends = {p: sends[p] for p in PATHS}
            progress("record: ready (recording off vs all); measuring")
            paths = await measure(sends, plan, lambda s: progress(f"record: {s}"))
            progress("record: trace of one ask, replay of the last asks (from the `all` recording)")
            after = await trace_and_replay(url, settings_of["all"])
    finally:
        await drop_jetstream(url, list(ROOTS.values()))
    ratios = {kind: over(flat(paths[f"{kind} all"]), flat(paths[f"{kind} off"])) for kind in ("single", "failover")}
    errors = {kind: over(flat(paths[f"{kind} errors"]), flat(paths[f"{kind} off"])) for kind in ("single", "failover")}
    return {"paths": paths, "all_over_off": ratios, "errors_over_off": errors, "failed": failed_asks(paths), **after}


async def trace_and_replay(url: str, settings) -> dict:
    """``llmbus trace`` of one recorded ask (a new process, and in this one) and the replay of the
    last ``REPLAY_ASKS`` recorded asks, timed."""
    import msgspec

    from actors import recording
    from actors.replay import replay_many
    from bus.connection import connect
    from bus.subjects import Subjects

    subjects = Subjects(settings.bus.root)
    nc = await connect(url, name="bench-rec-trace")
    try:
        traces = [t for t in recording.build_traces(subjects, await recording.read(nc, subjects.record_stream)).values()
                  if t.ask is not None and t.ask.reply is not None]
        if not traces:
            return {"trace": {}, "replay": {}}
        ask_id = traces[len(traces) // 2].ask_id  # one in the middle: thousands before and after it
        t0 = time.perf_counter()
        found = await recording.trace(nc, subjects, ask_id)
        in_process_ms = (time.perf_counter() - t0) * 1000
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
            config.write(f'[bus]\nroot = "{settings.bus.root}"\nnats_url = "{url}"\n')
            config.flush()
            walls = []
            for _ in range(TRACE_RUNS):
                t0 = time.perf_counter()
                done = await anyio.to_thread.run_sync(lambda: subprocess.run(
                    [sys.executable, "-m", "actors.cli", "--config", config.name, "trace", ask_id],
                    capture_output=True, timeout=60))
                walls.append((time.perf_counter() - t0) * 1000)
                if done.returncode != 0:
                    raise RuntimeError(f"llmbus trace failed: {done.stderr.decode()[-300:]}")
        batch = traces[-REPLAY_ASKS:]
        t0 = time.perf_counter()
        replayed = await replay_many(nc, url, msgspec.structs.replace(settings), batch)
        replay_s = time.perf_counter() - t0
    finally:
        await nc.close()
    return {"trace": {"asks_recorded": len(traces), "calls": len(found.calls), "in_process_ms": round(in_process_ms, 1),
                      "process_best_ms": round(min(walls), 1), "process_median_ms": round(statistics.median(walls), 1)},
            "replay": {"asks": len(replayed), "seconds": round(replay_s, 3),
                       "changed": sum(1 for r in replayed if not r.same)}}


def goals(result: dict) -> list[dict]:
    out = []
    if result.get("trace"):
        out.append(goal("trace of one ask, process start included (median)", result["trace"]["process_median_ms"],
                        300.0, "≤", "ms"))
    if result.get("replay"):
        out.append(goal(f"replay of {result['replay']['asks']} recorded asks", result["replay"]["seconds"], 10.0,
                        "≤", "s"))
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
    console.print(paths_table(
        f"llmbus bench — record — {loop}",
        "one process; all: every request and reply stored in <ROOT>_RECORD (file, no_ack)",
        {p: result["paths"][p] for p in PATHS},
        {f"{k} {mode}/off": result[f"{mode}_over_off"][k] for mode in ("all", "errors") for k in ("single", "failover")}))
    tr, rp = result.get("trace") or {}, result.get("replay") or {}
    if tr:
        console.print(f"llmbus trace of one ask among {tr['asks_recorded']:,} recorded: {tr['process_best_ms']} ms best, "
                      f"{tr['process_median_ms']} ms median of {TRACE_RUNS} (a new process each); "
                      f"{tr['in_process_ms']} ms of it in-process", markup=False)
    if rp:
        console.print(f"replay of the last {rp['asks']:,} recorded asks: {rp['seconds']} s ({rp['changed']} changed)",
                      markup=False)
