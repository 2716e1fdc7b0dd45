"""The ``health`` section of ``llmbus bench``: what the breakers cost an ask, and how fast a
breaker transition reaches every router.

Every role runs in this process, on the bench's event loop, under the section's own subject roots,
whose JetStream streams (events, health bucket) are deleted when done (``measure.drop_jetstream``).
Cost accounting (``[cost]``) is off in these stacks: the section measures one feature.

(a) ``llmbus single`` with the breaker check on (``[health] enabled = true``, a health actor
running) against the same stack with it off, both stacks running side by side (roots
``bench-hon`` / ``bench-hoff``) so the paths take turns under the same conditions. Before
measuring, ``fail``'s breaker is opened through the real outcome path (one ask to it →
``Outcome`` event → health actor, ``failures_to_open = 1`` → KV → the router's watch) and
``zero``'s is written CLOSED through the health actor's ``reset`` endpoint, so ``screen()``
looks up real states. Paths: ``health off`` and ``health on`` ask ``zero`` alone (screen
finds it CLOSED); ``health on, open skipped`` asks ``["fail", "zero"]`` (screen drops the OPEN
``fail``, records a skipped step, ``zero`` answers; each answer's route is checked). The health
actor's own work (pulling outcomes, flushing metrics) shares the loop with both stacks.

(b) propagation: 3 routers (each its own connection and KV watch); N breaker transitions of one
provider, alternating open/closed with their sequence number in ``reason``, are ``kv.put``
from a separate connection, one at a time. Per transition: the time from just before the put
until the *last* router (and the first) applied it. How a router's apply is observed: its
``BreakerView.states`` dict is swapped for ``Observed``, a dict subclass whose ``__setitem__``
stamps ``perf_counter()`` when the watch loop stores the decoded state — the exact moment
``screen()`` would see it, with no polling task competing with the watchers for the loop (a
poller at 0.2 ms would itself delay the deliveries it measures). The three watchers share one
loop, so the last one's figure includes the others' handling (a few µs each). A transition no
router set applies within ``LOST_AFTER_S`` counts as lost, at that value, and as a failure.
Goal: every router within 50 ms at p99.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass

import anyio
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bus import codec
from bus import messages as m
from bus.client import Client
from bus.connection import connect
from bus.deadline import deadline_in
from bus.rpc import new_id
from bus.streams import ensure_kv
from bus.subjects import HEALTH_RESET, Subjects
from actors.bench.measure import (
    BUDGET_MS, PROMPT, Plan, Progress, Send, bench_settings, client_send, drop_jetstream, failed_asks, flat, goal,
    label, measure, over, route_is, show, spread, wait_for,
)
from actors.pure import breaker as br
from actors.runtime import run_actors
from actors.settings import HealthSettings
from actors.stack import build_actor, build_actors


@dataclass(frozen=True)
class HealthPlan:
    health: Plan = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
    transitions: int = 200


FULL = HealthPlan()
QUICK = HealthPlan(health=Plan(warmup=20, samples=100, seconds=0.3, rounds=1, concurrency=(64,)), transitions=20)


# --- health (a): the breaker check on the ask path ----------------------------------------------

HEALTH_ON, HEALTH_OFF = "bench-hon", "bench-hoff"
PATHS = ("health off", "health on", "health on, open skipped")


async def measure_check(url: str, plan: Plan, progress: Progress = lambda s: None) -> dict:
    on = bench_settings(HEALTH_ON, health=HealthSettings(enabled=True, failures_to_open=1, cooldown_s=3600.0))
    off = bench_settings(HEALTH_OFF, health=HealthSettings(enabled=False))
    providers = ["provider.zero", "provider.fail"]
    try:
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            router, *_ = await tg.start(run_actors, build_actors(on, ["router", "health", *providers]), url)
            await tg.start(run_actors, build_actors(off, ["router", *providers]), url)
            c_on = await stack.enter_async_context(Client(url, root=HEALTH_ON, name="bench-client"))
            c_off = await stack.enter_async_context(Client(url, root=HEALTH_OFF, name="bench-client"))

            # fail: OPEN through the real path (ask → Outcome → health actor → KV → the router's watch);
            # zero: CLOSED in KV through the health actor's reset endpoint.
            first = m.Ask(id=new_id(), messages=PROMPT, strategy="single", providers=["fail"])
            await c_on.send(first, deadline=deadline_in(BUDGET_MS))
            await c_on.rpc.service(HEALTH_RESET, m.HealthReset(provider="zero"), deadline=deadline_in(5000))
            live = lambda p: br.effective(router.breakers.states[p], time.time()).state  # noqa: E731
            await wait_for(lambda: {"fail", "zero"} <= router.breakers.states.keys()
                           and (live("fail"), live("zero")) == (br.OPEN, br.CLOSED), "breaker states in the router")

            zero_only = m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"])
            both = msgspec.structs.replace(zero_only, providers=["fail", "zero"])
            sends: dict[str, Send] = {
                "health off": client_send(c_off, zero_only, route_is(("zero", "ok"))),
                "health on": client_send(c_on, zero_only, route_is(("zero", "ok"))),
                "health on, open skipped": client_send(c_on, both, route_is(("fail", "breaker_open"), ("zero", "ok"))),
            }
            progress("health: ready (fail OPEN, zero CLOSED in the on-router's view); measuring")
            paths = await measure(sends, plan, lambda s: progress(f"health: {s}"))
            states = {p: live(p) for p in sorted(router.breakers.states)}
    finally:
        await drop_jetstream(url, [HEALTH_ON, HEALTH_OFF])
    return {"paths": paths, "states_seen_by_router": states, **health_deltas(paths)}


def health_deltas(paths: dict[str, dict]) -> dict:
    off = flat(paths["health off"])
    out = {}
    for p, key in (("health on", "on"), ("health on, open skipped", "skip")):
        mine = flat(paths[p])
        out[f"{key}_minus_off_p50_ms"] = round(mine["p50_ms"] - off["p50_ms"], 4)
        out[f"{key}_over_off"] = over(mine, off)
    return out


# --- health (b): breaker propagation to every router -------------------------------------------

PROPAGATION_ROOT = "bench-prop"
ROUTERS = 3
LOST_AFTER_S = 2.0
PROPAGATION_GOAL_MS = 50.0


class Observed(dict):
    """Stands in for a router's ``BreakerView.states``: calls ``on_set(key, value, t)`` with the
    ``perf_counter()`` at which the watch loop stores each update (then stores it as before)."""

    def __init__(self, states: dict, on_set: Callable[[str, m.BreakerState, float], None]) -> None:
        super().__init__(states)
        self.on_set = on_set

    def __setitem__(self, key: str, value: m.BreakerState) -> None:
        t = time.perf_counter()
        super().__setitem__(key, value)
        self.on_set(key, value, t)


async def measure_propagation(url: str, transitions: int, progress: Progress = lambda s: None) -> dict:
    settings = bench_settings(PROPAGATION_ROOT, health=HealthSettings(enabled=True))
    subjects, provider = Subjects(PROPAGATION_ROOT), "zero"
    want = ""  # the reason of the transition in flight
    seen: dict[int, float] = {}  # router → when it applied that transition
    all_seen = anyio.Event()

    def observer(i: int) -> Callable[[str, m.BreakerState, float], None]:
        def on_set(key: str, value: m.BreakerState, t: float) -> None:
            if key == provider and value.reason == want and i not in seen:
                seen[i] = t
                if len(seen) == ROUTERS:
                    all_seen.set()

        return on_set

    all_ms: list[float] = []
    first_ms: list[float] = []
    lost = 0
    try:
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            routers = await tg.start(run_actors, [build_actor("router", settings) for _ in range(ROUTERS)], url)
            for i, r in enumerate(routers):
                r.breakers.states = Observed(r.breakers.states, observer(i))
            nc = await connect(url, name="bench-kv-writer")
            stack.push_async_callback(nc.close)
            kv = await ensure_kv(nc, subjects.bucket("health"))
            progress(f"health: propagation to {ROUTERS} routers, {transitions} transitions")
            for n in range(transitions):
                wall = time.time()
                state = (m.BreakerState(provider=provider, state=br.OPEN, open_until=wall + 3600, reason=f"bench-{n}",
                                        changed_at=wall) if n % 2 == 0 else
                         m.BreakerState(provider=provider, state=br.CLOSED, reason=f"bench-{n}", changed_at=wall))
                payload = codec.encode(state)
                want, all_seen = state.reason, anyio.Event()
                seen.clear()
                t0 = time.perf_counter()
                await kv.put(f"state.{provider}", payload)
                with anyio.move_on_after(LOST_AFTER_S):
                    await all_seen.wait()
                if len(seen) < ROUTERS:
                    lost += 1
                got = [(seen.get(i, t0 + LOST_AFTER_S) - t0) * 1e3 for i in range(ROUTERS)]
                all_ms.append(max(got))
                first_ms.append(min(got))
    finally:
        await drop_jetstream(url, [PROPAGATION_ROOT])
    return {"routers": ROUTERS, "transitions": transitions, "lost": lost,
            "all_routers": spread(all_ms), "first_router": spread(first_ms)}


# --- the section interface (actors.bench.main) -------------------------------------------------


def describe(plan: HealthPlan) -> dict:
    return {**asdict(plan.health), "transitions": plan.transitions}


async def run(url: str, plan: HealthPlan, progress: Progress = lambda s: None) -> dict:
    out = await measure_check(url, plan.health, progress)
    out["propagation"] = p = await measure_propagation(url, plan.transitions, progress)
    out["failed"] = failed_asks(out["paths"]) + p["lost"]
    progress(f"health: on adds {out['on_minus_off_p50_ms']:.3f} ms p50; propagation p99 "
             f"{p['all_routers']['p99_ms']:.2f} ms (all {ROUTERS} routers), lost {p['lost']}")
    return out


def goals(health: dict) -> list[dict]:
    p99 = health["propagation"]["all_routers"]["p99_ms"]
    return [goal(f"health: every router sees a breaker transition ≤ {PROPAGATION_GOAL_MS:g} ms (p99)",
                 p99, PROPAGATION_GOAL_MS, "≤", " ms")]


def report(loop: str, health: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — health — {loop}",
                  caption=escape("llmbus single, one process; on: [health] enabled, fail OPEN + zero CLOSED in "
                                 "the router's view; open skipped: asks [fail, zero], fail skipped by screen()"))
    for col in ("metric", "off", "on", "on / off", "open skipped", "skipped / off"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    off, on, skip = (flat(health["paths"][p]) for p in PATHS)
    for k in off:
        table.add_row(label(k), show(k, off[k]), show(k, on[k]),
                      f"{health['on_over_off'][k]:.2f}×", show(k, skip[k]), f"{health['skip_over_off'][k]:.2f}×")
    console.print(table)
    console.print(f"health on adds {health['on_minus_off_p50_ms']:+.3f} ms p50 over off "
                  f"({health['on_over_off']['p50_ms']:.2f}×); with the open provider skipped "
                  f"{health['skip_minus_off_p50_ms']:+.3f} ms ({health['skip_over_off']['p50_ms']:.2f}×)",
                  highlight=False)
    p = health["propagation"]
    a, f = p["all_routers"], p["first_router"]
    console.print(f"breaker propagation, {p['transitions']} transitions (kv.put → applied in the router's view): "
                  f"all {p['routers']} routers p50 {a['p50_ms']:.2f} / p99 {a['p99_ms']:.2f} / max {a['max_ms']:.2f} ms; "
                  f"first router p50 {f['p50_ms']:.2f} / p99 {f['p99_ms']:.2f} ms; lost {p['lost']}", highlight=False)
