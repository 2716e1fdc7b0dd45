"""The ``dashboard`` section of ``llmbus bench``: what the live dashboard costs the process it runs in.

Three stacks in this process, each under its own root (a router and the ``zero`` mock provider),
measured in turns (``actors.bench.measure``), so drift on a shared machine hits them alike:

- ``no dashboard``: nothing watches;
- ``dashboard idle``: a ``Dashboard`` runs (health KV watch, events subscription, the reports polled)
  but nobody looks at the page, so it does not watch the asks;
- ``dashboard watched``: one page is open (an SSE viewer): the dashboard receives every ask of its
  root and the replies to the asking client, and counts them.

Then, on the idle root: how long a breaker state written to the health KV bucket (as the health
actor writes it) takes to come out of the dashboard's SSE stream as a frame (``push_ms``: the KV
watch, the board, the stream's wake-up; the HTTP hop and the browser's render are not in it — the
browser test in tests/test_dashboard.py covers those, within 2 s).

For ``actors.bench.main``: ``run(url, plan, progress)`` → ``{"paths", "idle_over_none",
"watched_over_none", "push_ms", "failed"}``; ``goals(result)`` (none: reported); ``report(loop, result,
console)``; plans ``FULL`` / ``QUICK``.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
import msgspec
from rich.console import Console

from actors.bench.measure import (
    PROMPT, Plan, Progress, bench_settings, client_send, drop_jetstream, failed_asks, flat, measure, over,
    paths_table, route_is, spread, wait_for,
)
from actors.gateway.dashboard import Dashboard
from actors.runtime import run_actors
from actors.settings import CacheSettings
from actors.stack import build_actors
from bus import codec
from bus import messages as m
from bus.client import Client
from bus.connection import connect
from bus.streams import ensure_kv
from bus.subjects import Subjects

PATHS = ("no dashboard", "dashboard idle", "dashboard watched")
ROOTS = dict(zip(PATHS, ("bench-dash-none", "bench-dash-idle", "bench-dash-watched")))
FULL = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
QUICK = Plan(warmup=20, samples=100, seconds=0.3, rounds=1, concurrency=(64,))
PUSHES = 40


def describe(plan: Plan) -> None:
    return None


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    try:
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            sends = {}
            for path, root in ROOTS.items():
                settings = bench_settings(root, cache=CacheSettings(enabled=False))
                await tg.start(run_actors, build_actors(settings, ["router", "provider.zero"]), url)
                client = await stack.enter_async_context(Client(url, root=root, name=f"bench-{path}"))
                if path != "no dashboard":
                    nc = await connect(url, name=f"bench-{path}")
                    stack.push_async_callback(nc.close)
                    dash = Dashboard(nc, Subjects(root), settings)
                    await tg.start(dash.run)
                    if path == "dashboard idle":
                        idle_dash = dash
                    if path == "dashboard watched":
                        dash.viewers += 1  # as an open SSE stream does
                        dash._looked_now()
                        await wait_for(lambda d=dash: "traffic" in d.board.sources, "the traffic watch")
                        watched = dash
                base = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"], cache="skip")
                sends[path] = client_send(client, base, route_is(("zero", "ok")))
            progress("dashboard: ready (three roots: none, idle, watched); measuring")
            paths = await measure(sends, plan, lambda s: progress(f"dashboard: {s}"))
            seen = sum(s.asks for s in watched.board.strategies.values())
            progress(f"dashboard: breaker change → SSE frame, {PUSHES} changes")
            push = await push_latency(idle_dash, PUSHES if plan is FULL else 6)
    finally:
        await drop_jetstream(url, list(ROOTS.values()))
    none, idle, looked = (flat(paths[p]) for p in PATHS)
    out = {"paths": paths, "idle_over_none": over(idle, none), "watched_over_none": over(looked, none),
           "watched_counted": seen, "push_ms": push, "failed": failed_asks(paths)}
    progress(f"dashboard: asks/s at 64 — none {none['asks_per_s@64']:.0f}, idle {idle['asks_per_s@64']:.0f}, "
             f"watched {looked['asks_per_s@64']:.0f}")
    return out


async def push_latency(dash: Dashboard, n: int) -> dict[str, float]:
    """Breaker states put in the health KV bucket, alternately open and closed: ms until each is
    in a frame of the dashboard's SSE stream (the generator the HTTP route serves)."""
    kv = await ensure_kv(dash.nc, dash.subjects.bucket("health"))
    frames = dash._stream()
    took: list[float] = []
    try:
        await frames.__anext__()  # the retry line
        for i in range(n):
            state = ("open", "closed")[i % 2]
            t0 = time.perf_counter()
            await kv.put("state.zero", codec.encode(m.BreakerState(provider="zero", state=state, changed_at=time.time())))
            with anyio.fail_after(5):
                while True:
                    frame = await frames.__anext__()
                    if not frame.startswith(b"event: state"):
                        continue
                    body = msgspec.json.decode(frame.split(b"data: ", 1)[1])
                    if any(p["name"] == "zero" and p["state"] == state for p in body["providers"]):
                        break
            took.append((time.perf_counter() - t0) * 1e3)
    finally:
        await frames.aclose()
    return spread(took) | {"changes": n}


def goals(result: dict) -> list[dict]:
    return []  # figures only


def report(loop: str, result: dict, console: Console) -> None:
    console.print(paths_table(
        f"llmbus bench — dashboard — {loop}",
        "one process, three roots (router + zero mock each); watched: one SSE viewer, "
        "so the dashboard receives every ask and its answer",
        {p: result["paths"][p] for p in PATHS},
        {"idle / none": result["idle_over_none"], "watched / none": result["watched_over_none"]}))
    console.print(f"the watched dashboard counted {result['watched_counted']:,} asks", highlight=False)
    push = result["push_ms"]
    console.print(f"a breaker change (health KV) → the dashboard's SSE frame: p50 {push['p50_ms']:.2f} ms, "
                  f"max {push['max_ms']:.2f} ms over {push['changes']} changes", highlight=False)
