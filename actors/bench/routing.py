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
sketches) sees them in arrival order, which is what one router sees. Not measured here (yet): the
real-NATS check of 500 hedged asks, tiers with a provider down, and the pipeline latency.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bus import messages as m
from actors.bench.measure import goal
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


FULL = SimPlan(asks=20_000, cascade_asks=20_000)
QUICK = SimPlan(asks=5_000, cascade_asks=5_000)


def describe(plan: SimPlan) -> dict:
    return {"hedging_asks": plan.asks, "cascade_asks": plan.cascade_asks}


def latency(rng: random.Random) -> float:
    if rng.random() < STALL_P:
        return STALL_S
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


def run_hedging(n: int, mode: str, seed: int = 11) -> dict:
    rng = random.Random(seed)
    live = Live()
    health = Sketch()  # what the health actor keeps (every success, fleet-wide)
    published_at = -1.0
    p95_true = MEDIAN_S * math.exp(1.645 * SIGMA)

    def sample(call):
        lat = latency(rng)
        return (math.inf, None) if lat >= STALL_S else (lat, m.Completion(id=call.key, ask_id="sim", provider="p",
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
        latencies.append(min(took, STALL_S))
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


async def run(url: str, plan: SimPlan = FULL, progress=lambda s: None) -> dict:
    progress(f"routing: hedging on a virtual clock, {plan.asks:,} asks per mode")
    hedging = {mode: run_hedging(plan.asks, mode) for mode in ("none", "fixed", "fixed-unlimited", "adaptive")}
    p95 = MEDIAN_S * math.exp(1.645 * SIGMA)
    hedging["theory"] = {"p99_ms": round(theory_p99(p95) * 1000, 1),
                         "no_stall_p99_ms": round(MEDIAN_S * math.exp(2.326 * SIGMA) * 1000, 1)}
    progress(f"routing: cascade, {plan.cascade_asks:,} asks")
    return {"hedging": hedging, "cascade": run_cascade(plan.cascade_asks), "failed": 0}


def goals(result: dict) -> list[dict]:
    h, c = result["hedging"], result["cascade"]
    ratio = h["adaptive"]["p99_ms"] / h["theory"]["p99_ms"]
    return [
        goal("routing: adaptive hedging p99 / theory", round(ratio, 3), 1.10, "≤", "×"),
        goal("routing: adaptive hedging extra calls", round(h["adaptive"]["extra_calls"] * 100, 2), 6.0, "≤", " %"),
        goal("routing: cascade cost saving", round(c["cascade"]["saving"] * 100, 1), 40.0, "≥", " %"),
        goal("routing: cascade accuracy / strong-only",
             round(c["cascade"]["accuracy"] / c["strong-only"]["accuracy"] * 100, 1), 95.0, "≥", " %"),
    ]


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
