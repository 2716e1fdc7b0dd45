"""The ``cache`` section of ``llmbus bench``: an ask answered from the cache against the same ask
answered by the zero-latency provider.

Two stacks in this process, each a router (cache on, cost off as in the other sections), the
``zero`` mock provider (0 ms) and a cache actor on a temporary directory: root ``bench-cache``
with the defaults, root ``bench-cache-disk`` with ``memory_mb = 0``. Four paths take turns ask by
ask, then round by round (``actors.bench.measure``), each answer checked:

- ``provider (cache skip)``: the bench's prepared Ask with ``cache="skip"`` → router → ``zero`` →
  Answer; the router does no cache work (route ``zero ok``).
- ``cache hit``: the same Ask (stored once before measuring) → router → lookup in the cache actor,
  answered from its memory (``Hot``): the hit of a key asked for lately (route ``cache hit``).
- ``cache hit (disk)``: the same on the ``memory_mb = 0`` stack: every lookup is a diskcache read
  in the actor's read lane (a worker thread hop).
- ``cache miss``: a new prompt each time → lookup (miss, a disk read) → flight lease (KV create)
  → ``zero`` → store (write lane) → lease delete → ``FlightEnd`` publish: what the cache adds to
  an ask that still goes to a provider.

Goal (issue 7): a hit is no slower than a provider call — ``cache hit`` p50 ≤ ``provider`` p50.

For ``actors.bench.main``: ``run(url, plan, progress)`` → ``{"paths", "hit_over_provider",
"disk_hit_over_provider", "miss_minus_provider_p50_ms", "failed"}``; ``goals(result)``;
``report(loop, result, console)``; plans ``FULL`` / ``QUICK``.
"""

from __future__ import annotations

import itertools
import tempfile
from contextlib import AsyncExitStack

import anyio
import msgspec
from rich.console import Console

from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in
from bus.rpc import new_id
from actors.bench.measure import (
    BUDGET_MS, PROMPT, Plan, Progress, Send, bench_settings, client_send, drop_jetstream, failed_asks, flat, goal,
    measure, over, paths_table, route_is,
)
from actors.runtime import run_actors
from actors.settings import CacheSettings
from actors.stack import build_actors

ROOT, DISK_ROOT = "bench-cache", "bench-cache-disk"
PATHS = ("provider (cache skip)", "cache hit", "cache hit (disk)", "cache miss")
FULL = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
QUICK = Plan(warmup=20, samples=100, seconds=0.3, rounds=1, concurrency=(64,))
BASE = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"])


def miss_send(client: Client, base: m.Ask) -> Send:
    """Asks that are never in the cache: the prompt is new every time."""
    numbers = itertools.count()

    async def send() -> bool:
        ask = msgspec.structs.replace(base, id=new_id(), messages=[
            m.Message(role="user", content=f"{PROMPT[0].text()} #{next(numbers)}")])
        reply = await client.send(ask, deadline=deadline_in(BUDGET_MS))
        return isinstance(reply, m.Answer) and not reply.cached and route_is(("zero", "ok"))(reply)

    return send


async def start(stack: AsyncExitStack, url: str, root: str, memory_mb: float) -> Client:
    """A stack under ``root`` with one answer stored; its client."""
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="llmbus-bench-cache-"))
    settings = bench_settings(root, cache=CacheSettings(dir=directory, memory_mb=memory_mb))
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)
    await tg.start(run_actors, build_actors(settings, ["router", "cache", "provider.zero"]), url)
    client = await stack.enter_async_context(Client(url, root=root, name="bench-client"))
    stored = await client.send(msgspec.structs.replace(BASE, id=new_id()), deadline=deadline_in(BUDGET_MS))
    if not isinstance(stored, m.Answer) or stored.cached:
        raise RuntimeError(f"cache: the first ask should have reached the provider: {stored}")
    return client


# --- the section interface (actors.bench.main) -------------------------------------------------


def describe(plan: Plan) -> None:
    return None  # not recorded in the bench's --json "plan"


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    hit_answer = lambda a: a.cached and route_is(("cache", "hit"))(a)  # noqa: E731
    try:
        async with AsyncExitStack() as stack:
            client = await start(stack, url, ROOT, CacheSettings().memory_mb)
            disk = await start(stack, url, DISK_ROOT, 0.0)
            sends: dict[str, Send] = {
                "provider (cache skip)": client_send(client, msgspec.structs.replace(BASE, cache="skip"),
                                                     route_is(("zero", "ok"))),
                "cache hit": client_send(client, BASE, hit_answer),
                "cache hit (disk)": client_send(disk, BASE, hit_answer),
                "cache miss": miss_send(client, BASE),
            }
            progress("cache: ready (one answer stored per stack); measuring")
            paths = await measure(sends, plan, lambda s: progress(f"cache: {s}"))
    finally:
        await drop_jetstream(url, [ROOT, DISK_ROOT])
    provider, hit, disk_hit, miss = (flat(paths[p]) for p in PATHS)
    out = {
        "paths": paths,
        "hit_over_provider": over(hit, provider),
        "disk_hit_over_provider": over(disk_hit, provider),
        "miss_minus_provider_p50_ms": round(miss["p50_ms"] - provider["p50_ms"], 4),
        "failed": failed_asks(paths),
    }
    progress(f"cache: hit p50 {hit['p50_ms']:.3f} ms (from disk {disk_hit['p50_ms']:.3f} ms) vs provider p50 "
             f"{provider['p50_ms']:.3f} ms ({out['hit_over_provider']['p50_ms']:.2f}×, from disk "
             f"{out['disk_hit_over_provider']['p50_ms']:.2f}×); a miss adds {out['miss_minus_provider_p50_ms']:+.3f} ms")
    return out


def goals(result: dict) -> list[dict]:
    return [goal("cache: a hit is no slower than the zero-latency provider (p50)",
                 result["hit_over_provider"]["p50_ms"], 1.0, "≤", "×")]


def report(loop: str, result: dict, console: Console) -> None:
    console.print(paths_table(
        f"llmbus bench — cache — {loop}",
        "one process; provider: cache=\"skip\" → zero (0 ms); hit: answered from the cache actor's memory; "
        "hit (disk): memory_mb = 0, a diskcache read in a worker thread; "
        "miss: a new prompt each time (lookup, flight lease, zero, store)",
        {p: result["paths"][p] for p in PATHS},
        {"hit / provider": result["hit_over_provider"], "disk hit / provider": result["disk_hit_over_provider"]}))
    console.print(f"a miss adds {result['miss_minus_provider_p50_ms']:+.3f} ms p50 over the provider path",
                  highlight=False)
