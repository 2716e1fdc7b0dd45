"""``llmbus bench --only routing``: the routing policies on a virtual clock (the real policy objects,
fed events by a discrete-event loop instead of the runner, so 20,000 asks take seconds).

- **Hedging.** Latency lognormal (median 100 ms, sigma 0.5) with 3 % stalls of 10 s (a copy that
  died mid-call). p50/p95/p99 and the extra-call rate for: no hedging; hedging at a fixed d = the
  success p95 within the 5 % budget; the same with no budget; adaptive hedging (the live p95 from
  a health-style sketch published once a virtual second, raised by the router's first-answer
  quantile). Theory: the p99 of min(X1, d + X2) with d = p95 and unlimited hedges, computed by
  numerical integration of the distribution — the best a single hedge at p95 can do. Goal: the
  adaptive p99 within 10 % of theory at ≤ 6 % extra calls.
- **Cascade.** A cheap model (cost 1, right 80 %) and a strong one (cost 15, right 92 %); the
  cheap model's confidence is informative but imperfect (right: uniform 0.55–1.0, wrong: uniform
  0.2–0.8 — an assumption, printed with the table). Cost and accuracy for strong-only, cheap-only,
  cascade at min_confidence 0.7, and the oracle (cheap when it is right). Goal: ≥ 40 % saving at
  ≥ 95 % of strong-only accuracy.

Asks are simulated one after another (each to its end, 10 ms apart): the shared state (budget,
sketches) sees them in arrival order, which is what one router sees.

Then on real NATS (a router, health and mock providers in this process, each under its own root):

- **Hedging, real time.** 500 asks (``--quick``: 100) through a router with ``hedged`` at the fixed
  d = p95 and the 5 % budget, on a mock of the same distribution (stalls never answer; an ask's
  budget is the stall time, so an unrescued stall costs what the simulation charges), 20 at a time;
  the same asks on the virtual clock beside it. Goal: p50 and p95 within 15 % of the simulation
  (at 500 asks; ×√(500/n) for fewer: a p95 of 100 samples moves by ~20 % between runs).
- **Tiers.** 100 concurrent premium asks (routes ``primary`` → ``b-route`` → ``emergency``), first
  with every provider up, then with the primary route's provider down (its actor not running: no
  responders, then its breaker opens and the route is skipped with no call). Goals: p95 added
  < 200 ms, none lost, the fallback route named in every answer.
- **Pipeline.** Stage 1 on a 50 ms mock, stage 2 on a 20 ms mock; stage 2 alone (``single``) for
  the baseline, then the pipeline, then the pipeline with stage 1 failing 100 % (the rules give the
  state). Goals: p95 added over stage 2 alone < 200 ms; 0 failed asks when stage 1 always fails.
"""

from __future__ import annotations

import heapq
import math
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import msgspec

from rich.console import Console
from rich.table import Table

from bus import messages as m
from bus.client import Client
from bus.deadline import now as clock
from bus.errors import LlmError
from actors.bench.measure import drop_jetstream, goal, wait_for
from actors.runtime import run_actors
from actors.settings import parse
from actors.stack import build_actors
from actors.pure.quantiles import Sketch
from actors.router.live import Live
from actors.strategies.base import Call, Cancel, Deadline, Done, Plan, Reply, Wake, WakeAt, options_for
from actors.strategies.cascade import Cascade
from actors.strategies.hedged import Hedged

ASK = m.Ask(id="sim", messages=[m.Message(role="user", content="sim")])
MEDIAN_S, SIGMA, STALL_P, STALL_S = 0.100, 0.5, 0.03, 10.0
DEADLINE_S = 30.0
GAP_S = 0.010  # virtual time between asks


@dataclass(frozen=True)
class SimPlan:
    asks: int
    cascade_asks: int
    real_asks: int = 500  # the real-time hedging check
    real_stall_s: float = 10.0  # its asks' budget: what an unrescued stall costs
    tier_asks: int = 100
    pipeline_asks: int = 200


FULL = SimPlan(asks=20_000, cascade_asks=20_000)
QUICK = SimPlan(asks=5_000, cascade_asks=5_000, real_asks=100, real_stall_s=1.0, tier_asks=100, pipeline_asks=30)


def describe(plan: SimPlan) -> dict:
    return {"hedging_asks": plan.asks, "cascade_asks": plan.cascade_asks, "real_hedging_asks": plan.real_asks,
            "tier_asks": plan.tier_asks, "pipeline_asks": plan.pipeline_asks}


def latency(rng: random.Random, stall_s: float = STALL_S) -> float:
    if rng.random() < STALL_P:
        return stall_s
    return rng.lognormvariate(math.log(MEDIAN_S), SIGMA)


def simulate(policy, t0: float, sample, on_success=None) -> tuple[float, int, object]:
    """Run one policy to its Done on a virtual clock: (latency s, calls made, the Done)."""
    events: list = []
    seq = 0
    calls = 0
    open_calls: dict[str, tuple] = {}
    actions = policy.start(t0)
    now = t0
    while True:
        for a in actions:
            kind = type(a)
            if kind is Call:
                calls += 1
                lat, result = sample(a)
                seq += 1
                open_calls[a.key] = (seq,)
                heapq.heappush(events, (now + lat, seq, Reply(a.key, result, lat * 1000, a.provider)))
            elif kind is WakeAt:
                seq += 1
                heapq.heappush(events, (a.at, seq, Wake(a.at)))
            elif kind is Cancel:
                open_calls.pop(a.key, None)
                policy.cancelled()
            elif kind is Done:
                return now - t0, calls, a
        while True:
            at, s, ev = heapq.heappop(events) if events else (math.inf, 0, None)
            if at >= t0 + DEADLINE_S:
                now, ev = t0 + DEADLINE_S, Deadline()
                break
            if type(ev) is Reply:
                if ev.key not in open_calls:
                    continue
                del open_calls[ev.key]
                if on_success is not None and ev.ok:
                    on_success(ev.target, ev.ms)
            now = at
            break
        actions = policy.step(ev, now)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_hedging(n: int, mode: str, seed: int = 11, stall_s: float = STALL_S) -> dict:
    rng = random.Random(seed)
    live = Live()
    health = Sketch()  # what the health actor keeps (every success, fleet-wide)
    published_at = -1.0
    p95_true = MEDIAN_S * math.exp(1.645 * SIGMA)

    def sample(call):
        lat = latency(rng, stall_s)
        return (math.inf, None) if lat >= stall_s else (lat, m.Completion(id=call.key, ask_id="sim", provider="p",
                                                                          model="p", text="ok"))

    def on_success(provider, ms):
        health.add(ms)

    opts = {"none": {"max_hedges": 0},
            "fixed": {"delay_s": p95_true},
            "fixed-unlimited": {"delay_s": p95_true, "max_extra": 1.0, "burst": 1e9},
            "adaptive": {}}[mode]
    options = options_for(Hedged, opts)
    if mode == "fixed-unlimited":
        live.hedge.tokens = 1e9
    latencies, calls = [], 0
    t = 0.0
    for _ in range(n):
        if t - published_at >= 1.0:  # the health actor flushes once a second; routers mirror it
            q = health.quantile(0.95)
            if q is not None:
                live.p95_ms["p"] = q
            published_at = t
        policy = Hedged(Plan(ASK, ["p"], options, t + DEADLINE_S, live))
        took, made, _ = simulate(policy, t, sample, on_success)
        latencies.append(min(took, stall_s))
        calls += made
        t += GAP_S
    return {"p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "extra_calls": round(calls / n - 1.0, 4),
            "delay_ms": round(policy.delay * 1000, 1)}


def theory_p99(d: float) -> float:
    """p99 of T = min(X1, d + X2), each X lognormal with probability 1 - STALL_P, else a stall (∞)."""
    def survival(x: float) -> float:  # P(X > x)
        if x <= 0:
            return 1.0
        z = (math.log(x) - math.log(MEDIAN_S)) / SIGMA
        return STALL_P + (1 - STALL_P) * 0.5 * math.erfc(z / math.sqrt(2))

    def tail(t: float) -> float:
        return survival(t) * (survival(t - d) if t > d else 1.0)

    lo, hi = 0.0, STALL_S
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > 0.01 else (lo, mid)
    return hi


def run_cascade(n: int, seed: int = 5) -> dict:
    rng = random.Random(seed)
    cheap_cost, strong_cost = 1.0, 15.0
    options = options_for(Cascade, {"min_confidence": 0.7})
    rows = {"strong-only": [0, 0.0], "cheap-only": [0, 0.0], "cascade": [0, 0.0], "oracle": [0, 0.0]}
    for _ in range(n):
        cheap_right = rng.random() < 0.80
        strong_right = rng.random() < 0.92
        conf = rng.uniform(0.55, 1.0) if cheap_right else rng.uniform(0.2, 0.8)
        rows["strong-only"][0] += strong_right
        rows["strong-only"][1] += strong_cost
        rows["cheap-only"][0] += cheap_right
        rows["cheap-only"][1] += cheap_cost
        rows["oracle"][0] += cheap_right or strong_right
        rows["oracle"][1] += cheap_cost + (0 if cheap_right else strong_cost)
        answers = {"cheap": (cheap_right, conf), "strong": (strong_right, 0.95)}

        def sample(call):
            right, c = answers[call.provider]
            return 0.05, m.Completion(id=call.key, ask_id="sim", provider=call.provider, model=call.provider,
                                      text="right" if right else "wrong", confidence=c)

        policy = Cascade(Plan(ASK, ["cheap", "strong"], options, DEADLINE_S, None))
        _, _, done = simulate(policy, 0.0, sample)
        rows["cascade"][0] += done.result.text == "right"
        rows["cascade"][1] += sum(cheap_cost if r.target == "cheap" else strong_cost for r in policy.replies)
    strong_cost_total = rows["strong-only"][1]
    return {name: {"accuracy": round(right / n, 4), "cost_per_ask": round(cost / n, 3),
                   "saving": round(1 - cost / strong_cost_total, 4)} for name, (right, cost) in rows.items()}


# --- on real NATS -------------------------------------------------------------------------------

OFF = "\n[cost]\nenabled = false\n[cache]\nenabled = false\n"
P95_MS = MEDIAN_S * math.exp(1.645 * SIGMA) * 1000

HEDGED = f"""
[router]
strategy = "hedged"
providers = ["p"]
[router.strategies.hedged]
delay_s = {P95_MS / 1000:.6f}
[providers.p]
latency = {{ dist = "lognormal", ms = {MEDIAN_S * 1000:.1f}, sigma = {SIGMA} }}
failures = {{ stall = {STALL_P} }}
[health]
enabled = false
""" + OFF

TIERS = """
[router]
strategy = "single"
providers = ["a", "b", "x"]
[providers.a]
latency = { dist = "fixed", ms = 20 }
[providers.b]
latency = { dist = "fixed", ms = 20 }
[providers.x]
latency = { dist = "fixed", ms = 20 }
[tiers.premium]
fallback_routes = true
[[tiers.premium.routes]]
name = "primary"
strategy = "single"
providers = ["x"]
[[tiers.premium.routes]]
name = "b-route"
strategy = "failover"
providers = ["b", "a"]
[[tiers.premium.routes]]
name = "emergency"
rules = "actors.pure.rules:emergency"
""" + OFF

PIPELINE = """
[router]
strategy = "single"
providers = ["cheap", "strong", "broken"]
[router.strategies.pipeline]
fallback = "actors.pure.rules:trip_state"
[providers.cheap]
latency = { dist = "fixed", ms = 50 }
[providers.strong]
latency = { dist = "fixed", ms = 20 }
[providers.broken]
failures = { unavailable = 1.0 }
[health]
enabled = false
""" + OFF


@asynccontextmanager
async def _stack(url: str, root: str, toml: str, names: list[str]):
    """The actors ``names`` of ``toml`` under ``root`` in this process, and a client."""
    settings = parse(toml, f"bench routing ({root})")
    settings = msgspec.structs.replace(settings, bus=msgspec.structs.replace(settings.bus, root=root)).check()
    try:
        async with anyio.create_task_group() as tg:
            actors = await tg.start(run_actors, build_actors(settings, names), url)
            try:
                async with Client(url, root=root, name="bench-routing") as client:
                    yield client, actors
            finally:
                for actor in actors:
                    actor.stop()  # drain and close: the task group ends with them
    finally:
        await drop_jetstream(url, [root])


async def _asks(client: Client, n: int, concurrency: int, make) -> list[tuple[float, object]]:
    """``n`` asks (``make(i)``: client.ask's arguments), ``concurrency`` at a time: (ms, Answer | error)."""
    results: list[tuple[float, object]] = []
    limiter = anyio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            kw = make(i)
            started = clock()
            try:
                result = await client.ask(kw.pop("prompt"), **kw)
            except LlmError as exc:
                result = exc
            results.append(((clock() - started) * 1000, result))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return results


def _pcts(ms: list[float]) -> dict:
    return {"p50_ms": round(percentile(ms, 0.50), 1), "p95_ms": round(percentile(ms, 0.95), 1),
            "p99_ms": round(percentile(ms, 0.99), 1)}


async def run_real_hedging(url: str, n: int, stall_s: float) -> dict:
    async with _stack(url, "bench-routing-hedge", HEDGED, ["router", "provider.p"]) as (client, actors):
        results = await _asks(client, n, 20, lambda i: {"prompt": f"hedge {i}", "cache": "skip",
                                                        "budget_ms": int(stall_s * 1000)})
    ms = [min(t, stall_s * 1000) if isinstance(r, m.Answer) else stall_s * 1000 for t, r in results]
    calls = sum(len(r.route) for _, r in results if isinstance(r, m.Answer))
    calls += sum(1 for _, r in results if not isinstance(r, m.Answer))  # a timed-out ask made at least one
    virtual = run_hedging(n, "fixed", stall_s=stall_s)
    return {"real": {**_pcts(ms), "extra_calls": round(calls / n - 1.0, 4),
                     "timed_out": sum(not isinstance(r, m.Answer) for _, r in results)},
            "virtual": virtual, "asks": n, "stall_s": stall_s}


def _premium(i: int) -> dict:
    return {"prompt": f"itinerary {i}", "tier": "premium", "cache": "skip", "budget_ms": 5000}


async def run_tiers(url: str, n: int) -> dict:
    names = ["router", "health", "provider.a", "provider.b"]
    async with _stack(url, "bench-routing-tiers-up", TIERS, [*names, "provider.x"]) as (client, _):
        up = await _asks(client, n, n, _premium)
    async with _stack(url, "bench-routing-tiers-down", TIERS, names) as (client, _):
        down = await _asks(client, n, n, _premium)
    out = {}
    for phase, results in (("all up", up), ("x down", down)):
        answers = [r for _, r in results if isinstance(r, m.Answer)]
        routes: dict[str, int] = {}
        for a in answers:
            name = a.metadata.get("route_name", "(none)")
            routes[name] = routes.get(name, 0) + 1
        out[phase] = {**_pcts([t for t, _ in results]), "answered": len(answers), "lost": n - len(answers),
                      "named": sum("route_name" in a.metadata for a in answers), "routes": routes}
    out["added_p95_ms"] = round(out["x down"]["p95_ms"] - out["all up"]["p95_ms"], 1)
    out["asks"] = n
    return out


async def run_pipeline(url: str, n: int) -> dict:
    names = ["router", "provider.cheap", "provider.strong", "provider.broken"]
    async with _stack(url, "bench-routing-pipeline", PIPELINE, names) as (client, _):
        ask = lambda i, **kw: {"prompt": f"{3 + i % 5} days in Lisbon for ${900 + i}, relaxed", "cache": "skip",
                               "budget_ms": 5000, **kw}  # noqa: E731
        phases = {
            "stage 2 alone": lambda i: ask(i, strategy="single", providers=["strong"]),
            "pipeline": lambda i: ask(i, strategy="pipeline", providers=["cheap", "strong"]),
            "stage 1 fails 100 %": lambda i: ask(i, strategy="pipeline", providers=["broken", "strong"]),
        }
        out = {}
        for phase, make in phases.items():
            results = await _asks(client, n, 10, make)
            answers = [r for _, r in results if isinstance(r, m.Answer)]
            sources: dict[str, int] = {}
            for a in answers:
                src = a.metadata.get("stage1", {}).get("source", "—")
                sources[src] = sources.get(src, 0) + 1
            out[phase] = {**_pcts([t for t, _ in results]), "failed": n - len(answers), "stage1": sources}
    base = out["stage 2 alone"]["p95_ms"]
    out["added_p95_ms"] = round(out["pipeline"]["p95_ms"] - base, 1)
    out["added_p95_ms_failing"] = round(out["stage 1 fails 100 %"]["p95_ms"] - base, 1)
    out["asks"] = n
    return out


async def run(url: str, plan: SimPlan = FULL, progress=lambda s: None) -> dict:
    progress(f"routing: hedging on a virtual clock, {plan.asks:,} asks per mode")
    hedging = {mode: run_hedging(plan.asks, mode) for mode in ("none", "fixed", "fixed-unlimited", "adaptive")}
    p95 = MEDIAN_S * math.exp(1.645 * SIGMA)
    hedging["theory"] = {"p99_ms": round(theory_p99(p95) * 1000, 1),
                         "no_stall_p99_ms": round(MEDIAN_S * math.exp(2.326 * SIGMA) * 1000, 1)}
    progress(f"routing: cascade, {plan.cascade_asks:,} asks")
    cascade = run_cascade(plan.cascade_asks)
    progress(f"routing: hedging in real time on NATS, {plan.real_asks} asks")
    real = await run_real_hedging(url, plan.real_asks, plan.real_stall_s)
    progress(f"routing: tiers, {plan.tier_asks} concurrent premium asks, all up then one provider down")
    tiers = await run_tiers(url, plan.tier_asks)
    progress(f"routing: pipeline, {plan.pipeline_asks} asks per phase")
    pipeline = await run_pipeline(url, plan.pipeline_asks)
    failed = tiers["all up"]["lost"] + tiers["x down"]["lost"] + pipeline["stage 1 fails 100 %"]["failed"]
    return {"hedging": hedging, "cascade": cascade, "hedging_real": real, "tiers": tiers, "pipeline": pipeline,
            "failed": failed}


def goals(result: dict) -> list[dict]:
    h, c = result["hedging"], result["cascade"]
    ratio = h["adaptive"]["p99_ms"] / h["theory"]["p99_ms"]
    return [
        goal("routing: adaptive hedging p99 / theory", round(ratio, 3), 1.10, "≤", "×"),
        goal("routing: adaptive hedging extra calls", round(h["adaptive"]["extra_calls"] * 100, 2), 6.0, "≤", " %"),
        goal("routing: cascade cost saving", round(c["cascade"]["saving"] * 100, 1), 40.0, "≥", " %"),
        goal("routing: cascade accuracy / strong-only",
             round(c["cascade"]["accuracy"] / c["strong-only"]["accuracy"] * 100, 1), 95.0, "≥", " %"),
        *real_goals(result),
    ]


def real_goals(result: dict) -> list[dict]:
    out = []
    r = result.get("hedging_real")
    if r is not None:
        tolerance = round(15.0 * math.sqrt(max(1.0, 500 / r["asks"])), 1)  # 15 % at 500 asks; a p95 of fewer is noisier
        for q in ("p50_ms", "p95_ms"):
            off = abs(r["real"][q] / r["virtual"][q] - 1.0) * 100
            out.append(goal(f"routing: real-time hedging {q[:3]} vs virtual clock, off by", round(off, 1), tolerance,
                            "≤", " %"))
    t = result.get("tiers")
    if t is not None:
        down = t["x down"]
        out += [goal("routing: tiers p95 added with a provider down", t["added_p95_ms"], 200.0, "≤", " ms"),
                goal("routing: tiers asks lost", down["lost"] + t["all up"]["lost"], 0, "≤", ""),
                goal("routing: tiers answers without a route name", down["answered"] - down["named"], 0, "≤", "")]
    p = result.get("pipeline")
    if p is not None:
        out += [goal("routing: pipeline p95 added over stage 2 alone", p["added_p95_ms"], 200.0, "≤", " ms"),
                goal("routing: pipeline failed asks with stage 1 down", p["stage 1 fails 100 %"]["failed"], 0,
                     "≤", "")]
    return out


def report(loop: str, result: dict, console: Console) -> None:
    h = result["hedging"]
    table = Table(title=f"llmbus bench — routing: hedging (virtual clock) — {loop}",
                  caption=f"lognormal median {MEDIAN_S * 1000:.0f} ms σ {SIGMA}, {STALL_P:.0%} stalls of "
                          f"{STALL_S:.0f} s; theory: min(X1, p95 + X2), unlimited hedges "
                          f"(no-stall lognormal p99 {h['theory']['no_stall_p99_ms']} ms)")
    for col in ("mode", "p50 ms", "p95 ms", "p99 ms", "extra calls", "delay ms"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    names = {"none": "no hedging", "fixed": "fixed d = p95, 5 % budget", "fixed-unlimited": "fixed d = p95, no budget",
             "adaptive": "adaptive (live p95 + first-answer quantile), 5 % budget"}
    for mode, name in names.items():
        f = h[mode]
        table.add_row(name, f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}", f"{f['p99_ms']:.1f}",
                      f"{f['extra_calls']:.2%}", f"{f['delay_ms']:.1f}")
    table.add_row("theory", "", "", f"{h['theory']['p99_ms']:.1f}", "", "")
    console.print(table)
    table = Table(title=f"llmbus bench — routing: cascade (simulated) — {loop}",
                  caption="cheap: cost 1, right 80 %, confidence U(0.55,1) when right, U(0.2,0.8) when wrong "
                          "(assumed); strong: cost 15, right 92 %; cascade at min_confidence 0.7")
    for col in ("router", "accuracy", "cost / ask", "saving vs strong-only"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for name, f in result["cascade"].items():
        table.add_row(name, f"{f['accuracy']:.1%}", f"{f['cost_per_ask']:.2f}", f"{f['saving']:.1%}")
    console.print(table)
    report_real(loop, result, console)


def report_real(loop: str, result: dict, console: Console) -> None:
    r = result.get("hedging_real")
    if r is not None:
        table = Table(title=f"llmbus bench — routing: hedging, real time on NATS vs virtual clock — {loop}",
                      caption=f"{r['asks']} asks, 20 at a time, fixed d = p95 ({P95_MS:.0f} ms), 5 % budget; "
                              f"an unrescued stall costs {r['stall_s']:g} s (the asks' budget) in both; real asks "
                              f"timed out: {r['real']['timed_out']}")
        for col in ("clock", "p50 ms", "p95 ms", "p99 ms", "extra calls"):
            table.add_column(col, justify="left" if col == "clock" else "right")
        for name in ("real", "virtual"):
            f = r[name]
            table.add_row(name, f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}", f"{f['p99_ms']:.1f}",
                          f"{f['extra_calls']:.2%}")
        console.print(table)
    t = result.get("tiers")
    if t is not None:
        table = Table(title=f"llmbus bench — routing: tiers, {t['asks']} concurrent premium asks — {loop}",
                      caption="routes primary (x) → b-route (b, a) → emergency (rules); x down = its actor "
                              f"not running; p95 added: {t['added_p95_ms']:+.1f} ms")
        for col in ("phase", "p50 ms", "p95 ms", "p99 ms", "answered", "lost", "route named", "routes"):
            table.add_column(col, justify="left" if col in ("phase", "routes") else "right")
        for phase in ("all up", "x down"):
            f = t[phase]
            table.add_row(phase, f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}", f"{f['p99_ms']:.1f}", str(f["answered"]),
                          str(f["lost"]), str(f["named"]), ", ".join(f"{k} {v}" for k, v in f["routes"].items()))
        console.print(table)
    p = result.get("pipeline")
    if p is not None:
        table = Table(title=f"llmbus bench — routing: pipeline, {p['asks']} asks per phase — {loop}",
                      caption=f"stage 1: 50 ms mock, stage 2: 20 ms mock, 10 at a time; p95 added over stage 2 "
                              f"alone: {p['added_p95_ms']:+.1f} ms ({p['added_p95_ms_failing']:+.1f} ms with "
                              "stage 1 failing: the rules give the state)")
        for col in ("phase", "p50 ms", "p95 ms", "p99 ms", "failed", "stage-1 source"):
            table.add_column(col, justify="left" if col in ("phase", "stage-1 source") else "right")
        for phase in ("stage 2 alone", "pipeline", "stage 1 fails 100 %"):
            f = p[phase]
            table.add_row(phase, f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}", f"{f['p99_ms']:.1f}", str(f["failed"]),
                          ", ".join(f"{k} {v}" for k, v in f["stage1"].items()))
        console.print(table)
