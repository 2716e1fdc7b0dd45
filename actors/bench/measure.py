"""How ``llmbus bench`` measures, shared by every section (``actors.bench.core``, ``health``,
``adapters``, ``cache``, ``cost``); it knows no section.

A section prepares its paths as ``Send`` callables (one ask each, True when answered as expected)
and hands them to ``measure``: sequential p50/p99 with the paths taking turns ask by ask, then
throughput at each concurrency with the paths taking turns round by round, so drift on a shared
machine hits them alike. ``goal`` is the one shape of a goal check; ``flat``, ``over``, ``label``
and ``show`` are the one way to name, compare and print figures, and ``paths_table`` the one table
of paths side by side. The bench's own stack (the ``zero`` and ``fail`` mock providers of
``CONFIG``) is built by ``bench_settings`` under a section's root, and ``drop_jetstream`` deletes that root's streams afterwards, so loops and
repeated runs start from scratch. ``spawn`` / ``wait_ready`` run a role in its own process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from rich.table import Table

from bus import messages as m
from bus.client import Client
from bus.connection import connect
from bus.deadline import deadline_in, now
from bus.rpc import new_id
from bus.server import terminate
from bus.streams import delete_root
from actors.settings import CostSettings, Settings, parse

BUDGET_MS = 30_000
CONFIG = """
[bus]
root = "bench"
[router]
strategy = "single"
providers = ["fail", "zero"]
[providers.zero]
kind = "mock"
latency = { dist = "fixed", ms = 0 }
[providers.fail]
kind = "mock"
latency = { dist = "fixed", ms = 0 }
failures = { unavailable = 1.0 }
"""
PROMPT = [m.Message(role="user", content="Why is the sky blue?")]
Send = Callable[[], Awaitable[bool]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    warmup: int = 200
    samples: int = 2000
    seconds: float = 3.0  # per path and concurrency, or ``max_asks``, whichever first …
    max_asks: int = 10_000
    rounds: int = 3  # … split in rounds, the paths taking turns
    concurrency: tuple[int, ...] = (64, 256)


# --- measuring ---------------------------------------------------------------------------------


async def throughput(send: Send, concurrency: int, *, seconds: float, max_asks: int) -> tuple[int, int, float]:
    """``concurrency`` workers ask back to back for ``seconds`` or ``max_asks``: (answered, failed, s)."""
    left, answered, failed, stop_at = max_asks, 0, 0, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal left, answered, failed
        while left > 0 and time.perf_counter() < stop_at:
            left -= 1
            if await send():
                answered += 1
            else:
                failed += 1

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return answered, failed, time.perf_counter() - t0


async def measure(sends: dict[str, Send], plan: Plan, progress: Progress = lambda s: None) -> dict[str, dict]:
    """Figures per path. The paths take turns (ask by ask, then round by round of each throughput
    run), so drift on a shared machine hits them alike."""
    progress(f"sequential: {plan.warmup} + {plan.samples} asks per path")
    took: dict[str, list[float]] = {p: [] for p in sends}
    failed = dict.fromkeys(sends, 0)
    for i in range(plan.warmup + plan.samples):
        for p, send in sends.items():
            t0 = time.perf_counter()
            failed[p] += not await send()
            if i >= plan.warmup:
                took[p].append((time.perf_counter() - t0) * 1e3)
    figures = {p: {**percentiles(ms), "asks_per_s": {}} for p, ms in took.items()}
    for c in plan.concurrency:
        progress(f"throughput: {c} in flight, {plan.seconds:g} s or {plan.max_asks:,} asks per path")
        answered, spent = dict.fromkeys(sends, 0), dict.fromkeys(sends, 0.0)
        for p, send in sends.items():  # warm this concurrency up
            failed[p] += (await throughput(send, c, seconds=plan.seconds, max_asks=2 * c))[1]
        for _ in range(plan.rounds):
            for p, send in sends.items():
                n, bad, dt = await throughput(send, c, seconds=plan.seconds / plan.rounds,
                                              max_asks=plan.max_asks // plan.rounds)
                answered[p], spent[p], failed[p] = answered[p] + n, spent[p] + dt, failed[p] + bad
        for p in sends:
            figures[p]["asks_per_s"][str(c)] = round(answered[p] / spent[p], 1)
    for p in sends:
        figures[p]["failed"] = failed[p]
    return figures


def client_send(client: Client, base: m.Ask, check: Callable[[m.Answer], bool] = lambda a: True) -> Send:
    async def send() -> bool:
        reply = await client.send(msgspec.structs.replace(base, id=new_id()), deadline=deadline_in(BUDGET_MS))
        return isinstance(reply, m.Answer) and check(reply)

    return send


def route_is(*steps: tuple[str, str]) -> Callable[[m.Answer], bool]:
    return lambda answer: [(s.provider, s.outcome) for s in answer.route] == list(steps)


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 4), "p99_ms": round(q[98], 4)}


def spread(ms: list[float]) -> dict[str, float]:
    return {**percentiles(ms), "max_ms": round(max(ms), 4)}


# --- figures, goals --------------------------------------------------------------------------


def flat(f: dict) -> dict[str, float]:
    return {"p50_ms": f["p50_ms"], "p99_ms": f["p99_ms"], **{f"asks_per_s@{c}": r for c, r in f["asks_per_s"].items()}}


def over(mine: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """Each flat figure of ``mine`` as a ratio to the same figure of ``base``."""
    return {k: round(v / base[k], 3) for k, v in mine.items()}


def failed_asks(paths: dict[str, dict]) -> int:
    return sum(f["failed"] for f in paths.values())


def label(k: str) -> str:
    """A flat figure's name as a table row shows it: ``p50 ms``, ``asks/s @64``."""
    return k.replace("_ms", " ms").replace("_per_s@", "/s @")


def show(k: str, v: float) -> str:
    return f"{v:,.0f}" if k.startswith("asks") else f"{v:.3f}"


def paths_table(title: str, caption: str, paths: dict[str, dict], ratios: dict[str, dict[str, float]]) -> Table:
    """The table of a section that compares paths: a row per flat figure, a column per path (its
    ``measure`` figures), then a column per ratio (its name -> the flat ratios, shown ``1.23×``)."""
    table = Table(title=title, caption=caption)
    for col in ("metric", *paths, *ratios):
        table.add_column(col, justify="left" if col == "metric" else "right")
    figures = [flat(f) for f in paths.values()]
    for k in figures[0]:
        table.add_row(label(k), *(show(k, f[k]) for f in figures), *(f"{r[k]:.2f}×" for r in ratios.values()))
    return table


def goal(name: str, value: float, limit: float, op: str, unit: str) -> dict:
    margin = round(limit - value if op == "≤" else value - limit, 4)
    return {"goal": name, "value": value, "limit": limit, "unit": unit, "pass": margin >= 0, "margin": margin}


# --- the bench's stack -------------------------------------------------------------------------


def bench_settings(root: str, **tables) -> Settings:
    """The bench's providers (``zero``, ``fail``; see ``CONFIG``) under ``root``. Cost accounting is
    off: a section measures one feature, and the mocks' models have no price (a router that prices
    answers would also log ``unpriced_model`` on every ask)."""
    base = parse(CONFIG, "actors.bench")
    tables = {"cost": CostSettings(enabled=False), **tables}
    return msgspec.structs.replace(base, bus=msgspec.structs.replace(base.bus, root=root), **tables).check()


async def wait_for(cond: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    give_up = now() + within_s
    while not cond():
        if now() > give_up:
            raise RuntimeError(f"{what}: not within {within_s:.0f}s")
        await anyio.sleep(0.005)


async def drop_jetstream(url: str, roots: list[str]) -> None:
    """Delete the events stream and every KV bucket (health, cost ledger, cache flights…) of each
    root, so a later loop's run of the same section starts from nothing."""
    nc = await connect(url, name="bench-cleanup")
    try:
        for root in roots:
            await delete_root(nc, root)
    finally:
        await nc.close()


# --- a role in its own process -----------------------------------------------------------------


def spawn(args: list[str], uvloop: bool, stack: AsyncExitStack) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMBUS_NATS_URL", "LLMBUS_ROOT")}
    log = stack.enter_context(tempfile.TemporaryFile())
    proc = subprocess.Popen([sys.executable, "-m", *args, *(["--uvloop"] if uvloop else [])], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    proc.log = log  # type: ignore[attr-defined]

    stack.callback(terminate, proc)
    return proc


async def wait_ready(nc, subject: str, proc: subprocess.Popen, within_s: float = 30.0) -> None:
    """Poll ``subject`` (micro ``$SRV.PING.<name>``, or a bare role's ping) until it answers."""
    give_up = now() + within_s
    while now() < give_up:
        if proc.poll() is not None:
            proc.log.seek(0)  # type: ignore[attr-defined]
            tail = proc.log.read().decode(errors="replace")[-2000:]  # type: ignore[attr-defined]
            raise RuntimeError(f"{proc.args[2:4]} exited with {proc.returncode}: {tail}")
        try:
            await nc.request(subject, b"", timeout=0.25)
            return
        except (NoRespondersError, NatsTimeout):
            await anyio.sleep(0.02)  # not subscribed yet: poll again
    raise RuntimeError(f"{subject} did not answer within {within_s:.0f}s")
