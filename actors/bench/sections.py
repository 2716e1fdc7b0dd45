"""The ``health`` and ``adapters`` sections of ``llmbus bench`` (``core`` is in ``actors.bench``).

Kept apart from ``actors.bench`` so that module stays about the bare-vs-llmbus comparison; these
sections reuse its measuring (``measure``: paths taking turns ask by ask, then round by round),
its bare one-hop role and its goal/report conventions. Every role runs in this process, on the
bench's event loop; each section runs under its own subject root and deletes its JetStream
streams (events, health bucket) when done, so loops and repeated runs start from scratch. Cost
accounting (``[cost]``) is off in these stacks: each section measures one feature.

health
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

adapters
    Per SDK kind (openai, anthropic, gemini), against one zero-latency ``WireServer`` (``auto_reply``)
    in this process: (i) ``raw SDK``: the SDK's own async client (retries off) called directly,
    the same model, message and max tokens; (ii) ``llmbus``: a ``Complete`` sent with ``rpc.call``
    to ``provider_complete(<kind>)``, served by the llmbus provider actor of that kind
    (``base_url`` = the WireServer, key from a dummy variable set in this process): Complete in →
    adapter → SDK call → Completion out, its Outcome/Usage events published as in production. So
    the llmbus figure includes one bus hop; the bare one-hop nats figure is measured beside it (same
    turns) for context. Sequential only (the WireServer and the SDKs share this loop).
"""

from __future__ import annotations

import os
import statistics
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
from bus.deadline import deadline_in, now
from bus.rpc import new_id
from bus.streams import delete_root, ensure_kv
from bus.subjects import Subjects
from actors.pure import breaker as br
from actors.bench.measure import (
    BARE, BUDGET_MS, CONFIG, PROMPT, Muxed, Plan, Send, bare_role, client_send, flat, goal, measure, one_hop_send,
)
from actors.runtime import run_actors
from actors.settings import BusSettings, CostSettings, HealthSettings, ProviderSettings, Settings, parse
from actors.stack import build_actor, build_actors

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SectionPlan:
    health: Plan = Plan(warmup=200, samples=2000, seconds=3.0, rounds=3, concurrency=(64,))
    transitions: int = 200
    adapters: Plan = Plan(warmup=100, samples=1000, concurrency=())


SECTIONS_FULL = SectionPlan()
SECTIONS_QUICK = SectionPlan(health=Plan(warmup=50, samples=300, seconds=0.6, rounds=2, concurrency=(64,)),
                             transitions=30, adapters=Plan(warmup=20, samples=200, concurrency=()))


def plan_dict(plan: SectionPlan, sections: list[str]) -> dict:
    out = {}
    if "health" in sections:
        out["health"] = {**asdict(plan.health), "transitions": plan.transitions}
    if "adapters" in sections:  # sequential only
        out["adapters"] = {"warmup": plan.adapters.warmup, "samples": plan.adapters.samples}
    return out


# --- shared -------------------------------------------------------------------------------------


def bench_settings(root: str, **tables) -> Settings:
    """The bench's providers (``zero``, ``fail``; see ``actors.bench.CONFIG``) under ``root``. Cost
    accounting is off: a section measures one feature, and the mocks' models have no price (a
    router that prices answers would also log ``unpriced_model`` on every ask)."""
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


def spread(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 4), "p99_ms": round(q[98], 4), "max_ms": round(max(ms), 4)}


def route_is(*steps: tuple[str, str]) -> Callable[[m.Answer], bool]:
    return lambda answer: [(s.provider, s.outcome) for s in answer.route] == list(steps)


# --- health (a): the breaker check on the ask path ----------------------------------------------

HEALTH_ON, HEALTH_OFF = "bench-hon", "bench-hoff"
HEALTH_PATHS = ("health off", "health on", "health on, open skipped")


async def measure_health_check(url: str, plan: Plan, progress: Progress = lambda s: None) -> dict:
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
            await c_on.rpc.request(c_on.subjects.service("health", "reset"),
                                   codec.encode(m.HealthReset(provider="zero")), deadline=deadline_in(5000))
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
        out[f"{key}_over_off"] = {k: round(v / off[k], 3) for k, v in mine.items()}
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


async def measure_health(url: str, plan: SectionPlan, progress: Progress = lambda s: None) -> dict:
    out = await measure_health_check(url, plan.health, progress)
    out["propagation"] = p = await measure_propagation(url, plan.transitions, progress)
    out["failed"] = sum(f["failed"] for f in out["paths"].values()) + p["lost"]
    progress(f"health: on adds {out['on_minus_off_p50_ms']:.3f} ms p50; propagation p99 "
             f"{p['all_routers']['p99_ms']:.2f} ms (all {ROUTERS} routers), lost {p['lost']}")
    return out


def health_goals(health: dict) -> list[dict]:
    p99 = health["propagation"]["all_routers"]["p99_ms"]
    return [goal(f"health: every router sees a breaker transition ≤ {PROPAGATION_GOAL_MS:g} ms (p99)",
                 p99, PROPAGATION_GOAL_MS, "≤", " ms")]


def report_health(loop: str, health: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — health — {loop}",
                  caption=escape("llmbus single, one process; on: [health] enabled, fail OPEN + zero CLOSED in "
                                 "the router's view; open skipped: asks [fail, zero], fail skipped by screen()"))
    for col in ("metric", "off", "on", "on / off", "open skipped", "skipped / off"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    off, on, skip = (flat(health["paths"][p]) for p in HEALTH_PATHS)
    for k in off:
        show = (lambda v: f"{v:,.0f}") if k.startswith("asks") else (lambda v: f"{v:.3f}")
        table.add_row(k.replace("_ms", " ms").replace("_per_s@", "/s @"), show(off[k]), show(on[k]),
                      f"{health['on_over_off'][k]:.2f}×", show(skip[k]), f"{health['skip_over_off'][k]:.2f}×")
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


# --- adapters: an SDK call, raw vs through the llmbus provider actor ----------------------------

ADAPTERS_ROOT = "bench-adapters"
KEY_ENV, DUMMY_KEY = "LLMBUS_BENCH_DUMMY_KEY", "sk-bench-not-a-real-key"
MAX_TOKENS = 64
KINDS = {  # kind: (model, what the SDK's base_url adds to the WireServer's URL)
    "openai": ("gpt-4o-mini", "/v1"),
    "anthropic": ("claude-haiku-4-5", ""),
    "gemini": ("gemini-2.5-flash", ""),
}


def raw_sdk(kind: str, url: str) -> tuple[Send, Callable]:
    """(send, aclose): the SDK's async client called directly, as a program without llmbus would."""
    model, suffix = KINDS[kind]
    text = PROMPT[0].text()
    if kind == "openai":
        from openai import AsyncOpenAI

        client = AsyncOpenAI(api_key=DUMMY_KEY, base_url=url + suffix, max_retries=0)

        async def send() -> bool:
            r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                     max_completion_tokens=MAX_TOKENS)
            return bool(r.choices[0].message.content)

        return send, client.close
    if kind == "anthropic":
        from anthropic import AsyncAnthropic

        client = AsyncAnthropic(api_key=DUMMY_KEY, base_url=url + suffix, max_retries=0)

        async def send() -> bool:
            r = await client.messages.create(model=model, messages=[{"role": "user", "content": text}],
                                             max_tokens=MAX_TOKENS)
            return bool(r.content)

        return send, client.close
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=DUMMY_KEY, http_options=types.HttpOptions(
        base_url=url + suffix, retry_options=types.HttpRetryOptions(attempts=1)))

    async def send() -> bool:
        r = await client.aio.models.generate_content(model=model, contents=[{"role": "user", "parts": [{"text": text}]}],
                                                     config={"max_output_tokens": MAX_TOKENS})
        return bool(r.text)

    return send, client.aio.aclose


def complete_send(client: Client, kind: str) -> Send:
    subject = client.subjects.provider_complete(kind)

    async def send() -> bool:
        req = m.Complete(id=new_id(), ask_id=new_id(), messages=PROMPT)
        got = await client.rpc.call(subject, req, codec.complete_reply, deadline=deadline_in(BUDGET_MS),
                                    ask_id=req.ask_id, call_id=req.id)
        return isinstance(got, m.Completion) and bool(got.text)

    return send


async def measure_adapters(url: str, plan: Plan, progress: Progress = lambda s: None) -> dict:
    from actors.fakes.auto import auto_reply
    from actors.fakes.server import WireServer

    had_key = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = DUMMY_KEY  # read by the provider actors when they are built
    try:
        async with AsyncExitStack() as stack:
            server = await stack.enter_async_context(WireServer(default=auto_reply))
            settings = Settings(
                bus=BusSettings(root=ADAPTERS_ROOT),
                providers={k: ProviderSettings(kind=k, model=model, base_url=server.url + suffix, api_key_env=KEY_ENV,
                                               max_tokens=MAX_TOKENS) for k, (model, suffix) in KINDS.items()},
                cost=CostSettings(enabled=False),
                source="actors.bench.sections",
            ).check()
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            progress("adapters: starting the provider actors (imports the SDKs)")
            await tg.start(run_actors, build_actors(settings, [f"provider.{k}" for k in KINDS]), url)
            await tg.start(bare_role, "provider", url)
            client = await stack.enter_async_context(Client(url, root=ADAPTERS_ROOT, name="bench-client"))
            sends: dict[str, Send] = {}
            for kind in KINDS:
                send, aclose = raw_sdk(kind, server.url)
                stack.push_async_callback(aclose)
                sends[f"{kind} raw SDK"], sends[f"{kind} llmbus"] = send, complete_send(client, kind)
            nc = await connect(url, name="bench-client")
            stack.push_async_callback(nc.close)
            sends["bare one-hop"] = one_hop_send(await Muxed(nc, BARE.reply_prefix(new_id())).start())
            progress(f"adapters: WireServer at {server.url}; measuring {', '.join(sends)}")
            paths = await measure(sends, plan, lambda s: progress(f"adapters: {s}"))
    finally:
        if had_key is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = had_key
        await drop_jetstream(url, [ADAPTERS_ROOT])
    for p in paths.values():
        p.pop("asks_per_s")  # sequential only
    kinds = {}
    for kind in KINDS:
        raw, bus = paths[f"{kind} raw SDK"], paths[f"{kind} llmbus"]
        kinds[kind] = {"p50_ratio": round(bus["p50_ms"] / raw["p50_ms"], 3),
                       "p99_ratio": round(bus["p99_ms"] / raw["p99_ms"], 3),
                       "adds_p50_ms": round(bus["p50_ms"] - raw["p50_ms"], 4)}
        progress(f"adapters: {kind}: raw p50 {raw['p50_ms']:.3f} ms, llmbus p50 {bus['p50_ms']:.3f} ms "
                 f"({kinds[kind]['p50_ratio']:.2f}×)")
    return {"paths": paths, "kinds": kinds, "failed": sum(f["failed"] for f in paths.values())}


def report_adapters(loop: str, adapters: dict, console: Console) -> None:
    hop = adapters["paths"]["bare one-hop"]
    table = Table(title=f"llmbus bench — adapters — {loop}",
                  caption="raw SDK: the SDK's client → WireServer (zero latency, this process); llmbus: Complete over "
                          "the bus → provider actor → the same SDK → Completion (one bus hop included); "
                          f"bare one-hop nats for context: p50 {hop['p50_ms']:.3f} ms, p99 {hop['p99_ms']:.3f} ms")
    for col in ("sdk", "metric", "raw SDK", "llmbus", "ratio", "adds"):
        table.add_column(col, justify="left" if col in ("sdk", "metric") else "right")
    for kind in KINDS:
        raw, bus = adapters["paths"][f"{kind} raw SDK"], adapters["paths"][f"{kind} llmbus"]
        for k in ("p50_ms", "p99_ms"):
            table.add_row(kind, k.replace("_ms", " ms"), f"{raw[k]:.3f}", f"{bus[k]:.3f}",
                          f"{bus[k] / raw[k]:.2f}×", f"{bus[k] - raw[k]:+.3f} ms")
    console.print(table)
