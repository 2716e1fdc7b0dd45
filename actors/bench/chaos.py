"""The ``chaos`` section of ``llmbus bench``: no ask lost, no actor cut off, under faults.

Its own nats-server (a fixed port and store, so it can be killed and restarted) and a
multi-process stack under root ``chaos``: 2 routers (failover over ``p`` then ``q``), health, cost,
2 copies of the mock provider ``p`` and one of ``q`` (50 ms each), one process per actor
(``llmbus actor``). A load of unique asks (64 in flight, 5 s budget, ``retries=2``, cache
skipped, one user per scenario so the ledger tells scenarios apart) runs through each scenario;
a third of the way in the fault strikes, and what was killed is restarted 1 s later:

- ``baseline`` (no fault); ``kill -9 router``; ``SIGTERM router``; ``kill -9 provider copy`` (not
  restarted); ``kill -9 health``; ``kill -9 cost``; ``kill -9 nats-server`` (restarted after 2 s).

Per scenario: answered, failed by kind, **lost** (the client heard nothing before its deadline),
**billed twice** (ledger calls − asks for the scenario's user: a call a provider completed for an
ask that was then answered by another call, which the issue allows), **beyond completed** (ledger
calls − the calls providers really completed, counted from their ``Usage`` events in the events
stream: billing with no call behind it, the goal), p50/p99/max of answered asks, and how many
answered asks took over 1 s (failover leaves a dead provider copy at its attempt deadline, 4 × the
copy's p95 + 0.25 s).

**Fuzz**: to every subject of the RPC table, random bytes, truncated, deep (5,000) and huge
(near max_payload) JSON, invalid UTF-8, wrong types, and valid bodies with bogus headers (a
streaming row is read to its last message: Chunks, then the Answer or Failure); then poison events (bad names, negative tokens, absurd times). Counts typed Failure replies against
silence, then checks every process is alive and every actor answers discovery.

**Overload**: a router and a 1 s mock provider under root ``chaos-load``; ``overload`` asks at once
(10,000; 2,000 with ``--quick``): each gets its answer or a fast ``overloaded``, none is silent;
the router's peak RSS; then 20 asks to check it recovered.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
from rich.console import Console
from rich.table import Table

from bus import codec
from bus import messages as m
from bus.client import Client
from bus.connection import connect
from bus.deadline import deadline_in
from bus.rpc import new_id
from bus.server import NatsServer
from bus.subjects import COST_REPORT, RPC_TABLE, Service, Subjects
from actors.bench.measure import Progress, goal, spawn

ROOT, LOAD_ROOT = "chaos", "chaos-load"
BUDGET_MS = 5000
PRICES = '[mock."p-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-12-01"\nsource = "bench"\n' \
         '[mock."q-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-12-01"\nsource = "bench"\n' \
         '[mock."slow-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-12-01"\nsource = "bench"\n'
CONFIG = """
[bus]
root = "{root}"
stop_grace_s = 5.0
[router]
strategy = "failover"
providers = ["p", "q"]
[cache]
enabled = false
[cost]
enabled = true
pricing = "{pricing}"
[providers.p]
model = "p-1"
latency = {{ dist = "fixed", ms = 50 }}
[providers.q]
model = "q-1"
latency = {{ dist = "fixed", ms = 50 }}
[providers.slow]
model = "slow-1"
latency = {{ dist = "fixed", ms = 1000 }}
"""
# process name -> actor name; "router-1" and "router-2" are two copies, as are "p-1" and "p-2"
LAYOUT = {"router-1": "router", "router-2": "router", "health": "health", "cost": "cost",
          "p-1": "provider.p", "p-2": "provider.p", "q": "provider.q"}
SCENARIOS = ("baseline", "kill -9 router", "SIGTERM router", "kill -9 provider copy", "kill -9 health",
             "kill -9 cost", "kill -9 nats-server")


@dataclass(frozen=True)
class Plan:
    asks: int = 1500  # per scenario
    concurrency: int = 64
    overload: int = 10_000


FULL = Plan()
QUICK = Plan(asks=300, overload=2000)


def describe(plan: Plan) -> dict:
    return {"asks": plan.asks, "concurrency": plan.concurrency, "overload": plan.overload}


# --- the stack --------------------------------------------------------------------------------


class Fleet:
    """The nats-server and one process per actor, each killable and restartable."""

    def __init__(self, stack: AsyncExitStack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.store = tmp / "js"
        pricing = tmp / "pricing.toml"
        pricing.write_text(PRICES)
        self.config = tmp / "chaos.toml"
        self.config.write_text(CONFIG.format(root=ROOT, pricing=pricing))
        self.load_config = tmp / "load.toml"
        self.load_config.write_text(CONFIG.format(root=LOAD_ROOT, pricing=pricing))
        self.server: NatsServer | None = None
        self.port: int | None = None
        self.procs: dict[str, object] = {}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start_server(self) -> None:
        self.server = NatsServer(port=self.port, store=self.store).start()
        self.port = self.server.port
        self.stack.callback(self.server.stop)

    def kill_server(self) -> None:
        self.server.process.kill()
        self.server.process.wait()

    async def start(self, proc: str, *, config: Path | None = None, actor: str | None = None) -> None:
        actor = actor or LAYOUT[proc]
        cfg = config or self.config
        root = LOAD_ROOT if cfg == self.load_config else ROOT
        p = spawn(["actors.cli", "actor", actor, "--nats-url", self.url_for(proc), "--config", str(cfg)], False,
                  self.stack)
        self.procs[proc] = p
        # ready = this process logged actor_ready (another copy may already answer discovery)
        give_up = time.monotonic() + 60.0
        while time.monotonic() < give_up:
            if p.poll() is not None:
                p.log.seek(0)
                raise RuntimeError(f"{proc} exited with {p.returncode}: {p.log.read().decode(errors='replace')[-2000:]}")
            p.log.seek(0)
            if b"actor_ready" in p.log.read():
                return
            await anyio.sleep(0.05)
        raise RuntimeError(f"{proc} ({root}) not ready within 60 s")

    def url_for(self, proc: str) -> str:
        """The NATS URL process ``proc`` connects to (one server here; ``actors.bench.cluster`` spreads them)."""
        return self.url

    def signal(self, proc: str, sig: int) -> None:
        p = self.procs[proc]
        p.send_signal(sig)
        p.wait()


# --- load ----------------------------------------------------------------------------------------


async def load(client: Client, n: int, concurrency: int, user: str, fault_at: int, fault) -> dict:
    """``n`` unique asks, ``concurrency`` at a time; ``fault()`` runs once ``fault_at`` have been sent."""
    kinds: Counter = Counter()
    took: list[float] = []
    lost = 0
    sent = 0
    fault_started = anyio.Event()

    async def worker() -> None:
        nonlocal sent, lost
        while sent < n:
            sent += 1
            if sent == fault_at:
                fault_started.set()
            ask = m.Ask(id=new_id(), messages=[m.Message(role="user", content="chaos")], user=user, cache="skip",
                        budget_ms=BUDGET_MS)
            t0 = time.perf_counter()
            reply = await client.send(ask, deadline=deadline_in(BUDGET_MS), retries=2)
            if isinstance(reply, m.Answer):
                took.append((time.perf_counter() - t0) * 1e3)
                kinds["answered"] += 1
            elif reply.kind == m.TIMEOUT and reply.message.startswith("no reply from"):
                lost += 1
            else:
                kinds[reply.kind] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
        if fault is not None:
            await fault_started.wait()
            await fault()
    q = statistics.quantiles(took, n=100, method="inclusive") if len(took) > 1 else [0.0] * 99
    return {"asks": n, "answered": kinds.pop("answered", 0), "failed": dict(kinds), "lost": lost,
            "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(max(took, default=0.0), 1),
            "over_1s": sum(t > 1000 for t in took)}


async def billed(client: Client, user: str, answered: int) -> dict:
    """Ledger calls and asks of ``user`` once the ledger caught up (up to 10 s)."""
    give_up = time.monotonic() + 10.0
    line = None
    while time.monotonic() < give_up:
        report = await client.rpc.service(COST_REPORT, m.CostQuery(by="user"), deadline=deadline_in(2000))
        if isinstance(report, m.CostReport):
            line = next((x for x in report.lines if x.key == user), None)
            if line is not None and line.asks >= answered:
                break
        await anyio.sleep(0.25)
    calls, asks = (line.calls, line.asks) if line else (0, 0)
    return {"ledger_calls": calls, "ledger_asks": asks, "billed_twice": max(0, calls - asks)}


async def completed_calls(nc) -> Counter:
    """Per user, the calls providers really completed: distinct (ask id, call id) of the ``Usage``
    events in the events stream (what each provider published once it had its answer)."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    subjects = Subjects(ROOT)
    js = nc.jetstream()
    sub = await js.pull_subscribe(subjects.usage("*"), stream=subjects.events_stream,
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                                                        inactive_threshold=30.0))
    decode = msgspec.json.Decoder(m.Usage | m.Usages).decode
    seen: dict[str, set[tuple[str, str]]] = {}
    try:
        while True:
            try:
                batch = await sub.fetch(1000, timeout=1.0)
            except TimeoutError:
                break
            for msg in batch:
                try:
                    event = decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # the fuzz's poison
                for usage in event.items if isinstance(event, m.Usages) else [event]:
                    seen.setdefault(usage.user or "", set()).add((usage.ask_id, usage.call_id))
    finally:
        await sub.unsubscribe()
    return Counter({user: len(calls) for user, calls in seen.items()})


def fault_for(fleet: Fleet, scenario: str):
    async def restart_later(proc: str, after_s: float = 1.0) -> None:
        await anyio.sleep(after_s)
        await fleet.start(proc)

    async def fault() -> None:
        if scenario == "kill -9 router":
            fleet.signal("router-1", signal.SIGKILL)
            await restart_later("router-1")
        elif scenario == "SIGTERM router":
            fleet.signal("router-2", signal.SIGTERM)
            await restart_later("router-2")
        elif scenario == "kill -9 provider copy":
            fleet.signal("p-1", signal.SIGKILL)  # restarted only after the scenario
        elif scenario == "kill -9 health":
            fleet.signal("health", signal.SIGKILL)
            await restart_later("health")
        elif scenario == "kill -9 cost":
            fleet.signal("cost", signal.SIGKILL)
            await restart_later("cost")
        elif scenario == "kill -9 nats-server":
            fleet.kill_server()
            await anyio.sleep(2.0)
            fleet.start_server()

    return None if scenario == "baseline" else fault


# --- fuzz ----------------------------------------------------------------------------------------


VALID_BODY = ("bogus headers", "negative budget")  # a valid ask body: any typed reply is right


def payloads(max_payload: int) -> dict[str, tuple[bytes, dict | None]]:
    rnd = random.Random(11)
    valid = codec.encode(m.Ask(id="fuzz", messages=[m.Message(role="user", content="fuzz")]))
    return {
        "random bytes": (bytes(rnd.getrandbits(8) for _ in range(512)), None),
        "truncated": (valid[: len(valid) // 2], None),
        "deep": (b'{"type":"Ask","id":"x","messages":[],"schema":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}", None),
        "huge": (b'{"type":"Ask","id":"x","messages":[{"role":"user","content":"' + b"x" * (max_payload - 200)
                 + b'"}]}', None),
        "invalid utf-8": (b'{"type":"Ask","id":"\xff\xfe\xfd","messages":[]}', None),
        "wrong types": (b'{"type":"Ask","id":5,"messages":"no","budget_ms":"x"}', None),
        "empty": (b"", None),
        "bogus headers": (valid, {"Llm-Budget-Ms": "1e309", "Llm-Ask-Id": "x" * 300}),
        "negative budget": (valid, {"Llm-Budget-Ms": "-5"}),
    }


async def final_reply(nc, row: Service, subject: str, data: bytes, headers: dict | None) -> bytes:
    """The reply's body; for a streaming row its last message (the Answer or Failure after the Chunks)."""
    if not row.streaming:
        return (await nc.request(subject, data, timeout=3.0, headers=headers)).data
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, data, reply=inbox, headers=headers)
        give_up = time.monotonic() + 10.0
        while True:
            msg = await sub.next_msg(timeout=max(0.01, min(3.0, give_up - time.monotonic())))
            if msg.headers and msg.headers.get("Status") == "503":
                raise RuntimeError("no responders")
            if not msg.data.startswith(b'{"type":"Chunk"'):
                return msg.data
    finally:
        await sub.unsubscribe()


async def fuzz(fleet: Fleet, progress: Progress) -> dict:
    nc = await connect(fleet.url, name="chaos-fuzz")
    subjects = Subjects(ROOT)
    counts: Counter = Counter()
    silent: list[str] = []
    try:
        for row in RPC_TABLE:
            subject = row.subject(subjects, "p")
            for name, (data, headers) in payloads(nc.max_payload).items():
                try:
                    reply = await final_reply(nc, row, subject, data, headers)
                except Exception as exc:  # silence (timeout) or no responders
                    if "no responders" in str(exc).lower():  # no actor of this row in the chaos stack
                        counts["no responders (not in the stack)"] += 1
                    else:
                        counts["silence"] += 1
                        silent.append(f"{row.name}: {name} (silence)")
                    continue
                try:
                    body = msgspec.json.decode(reply)
                    kind = body.get("type") if isinstance(body, dict) else None
                except msgspec.DecodeError:
                    kind = None
                if kind == "Failure":
                    counts["typed failure"] += 1
                elif kind is not None and name in VALID_BODY:  # a valid request despite its headers: answered
                    counts["typed reply (valid body)"] += 1
                else:
                    counts["untyped reply"] += 1
                    silent.append(f"{row.name}: {name} (untyped reply)")
        poison = [m.Outcome(provider="\u0000", ok=False), m.Outcome(provider="x" * 5000, ok=False),
                  m.Usage(ask_id="f", call_id="f1", provider="p", model="p-1", usage=m.TokenUsage(input_tokens=1), at=1e300),
                  m.Usage(ask_id="f", call_id="f2", provider="p", model="p-1", user="chaos-poison",
                          usage=m.TokenUsage(input_tokens=-1_000_000_000))]
        for ev in poison:
            subject = subjects.outcome("p") if isinstance(ev, m.Outcome) else subjects.usage("p")
            await nc.publish(subject, codec.encode(ev))
        for raw in (b"\x00garbage", b"[" * 50_000):
            await nc.publish(subjects.outcome("p"), raw)
            await nc.publish(subjects.usage("p"), raw)
        await nc.flush()
        await anyio.sleep(1.0)  # let health and cost read them
        alive = {name: p.poll() is None for name, p in fleet.procs.items()}
        answering = {}
        for name, actor in LAYOUT.items():
            try:
                await nc.request(f"$SRV.PING.{ROOT}-{actor.replace('.', '-')}", b"", timeout=2.0)
                answering[actor] = True
            except Exception:
                answering[actor] = False
    finally:
        await nc.close()
    requests = sum(v for k, v in counts.items() if not k.startswith("no responders"))
    progress(f"chaos fuzz: {counts['typed failure']}/{requests} typed failures; alive {sum(alive.values())}/{len(alive)}")
    return {"requests": requests, "replies": dict(counts), "silent": silent[:20], "alive": alive,
            "answering": answering}


# --- overload --------------------------------------------------------------------------------------


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return round(fields.get("VmRSS", 0.0), 1), round(fields.get("VmHWM", 0.0), 1)


async def overload(fleet: Fleet, n: int, progress: Progress) -> dict:
    await fleet.start("load-router", config=fleet.load_config, actor="router")
    await fleet.start("load-slow", config=fleet.load_config, actor="provider.slow")
    kinds: Counter = Counter()
    fast_fail: list[float] = []
    async with Client(fleet.url, root=LOAD_ROOT, name="chaos-overload") as client:
        async def one() -> None:
            ask = m.Ask(id=new_id(), messages=[m.Message(role="user", content="load")], providers=["slow"],
                        strategy="single", cache="skip")
            t0 = time.perf_counter()
            reply = await client.send(ask, deadline=deadline_in(10_000))
            if isinstance(reply, m.Answer):
                kinds["answered"] += 1
            elif reply.kind == m.TIMEOUT and reply.message.startswith("no reply from"):
                kinds["lost"] += 1
            else:
                kinds[reply.kind] += 1
                if reply.kind == m.OVERLOADED:
                    fast_fail.append((time.perf_counter() - t0) * 1e3)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        took_s = time.perf_counter() - t0
        rss, peak = rss_mb(fleet.procs["load-router"].pid)
        recovered = 0
        for _ in range(20):
            reply = await client.send(m.Ask(id=new_id(), messages=[m.Message(role="user", content="after")],
                                            providers=["slow"], strategy="single", cache="skip"),
                                      deadline=deadline_in(5000))
            recovered += isinstance(reply, m.Answer)
    q = statistics.quantiles(fast_fail, n=100, method="inclusive") if len(fast_fail) > 1 else [0.0] * 99
    out = {"in_flight": n, "replies": dict(kinds), "lost": kinds.get("lost", 0), "took_s": round(took_s, 2),
           "overloaded_p99_ms": round(q[98], 1), "router_rss_mb": rss, "router_peak_rss_mb": peak,
           "recovered": f"{recovered}/20"}
    progress(f"chaos overload: {out}")
    return out


# --- the section interface ---------------------------------------------------------------------------


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    """``url`` is not used: chaos kills its own nats-server."""
    scenarios: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="llmbus-chaos-") as tmp:
        async with AsyncExitStack() as stack:
            fleet = Fleet(stack, Path(tmp))
            fleet.start_server()
            progress(f"chaos: nats-server at {fleet.url}; starting {len(LAYOUT)} actor processes")
            async with anyio.create_task_group() as tg:
                for proc in LAYOUT:
                    tg.start_soon(fleet.start, proc)
            client = await stack.enter_async_context(Client(fleet.url, root=ROOT, name="chaos-client"))
            for scenario in SCENARIOS:
                user = "chaos-" + scenario.replace(" ", "-").replace("9", "nine")
                progress(f"chaos: {scenario} ({plan.asks} asks, {plan.concurrency} in flight)")
                figures = await load(client, plan.asks, plan.concurrency, user, plan.asks // 3,
                                     fault_for(fleet, scenario))
                figures |= await billed(client, user, figures["answered"])
                figures["user"] = user
                scenarios[scenario] = figures
                progress(f"chaos: {scenario}: {figures}")
                if scenario == "kill -9 provider copy":
                    await fleet.start("p-1")
            completed = await completed_calls(client.nc)
            for figures in scenarios.values():
                figures["completed_calls"] = done = completed.get(figures.pop("user"), 0)
                figures["billed_beyond_completed"] = max(0, figures["ledger_calls"] - done)
            fuzzed = await fuzz(fleet, progress)
            loaded = await overload(fleet, plan.overload, progress)
    lost = sum(f["lost"] for f in scenarios.values()) + loaded["lost"]
    return {"scenarios": scenarios, "fuzz": fuzzed, "overload": loaded, "failed": lost}


def goals(result: dict) -> list[dict]:
    s = result["scenarios"]
    fz, ov = result["fuzz"], result["overload"]
    r = fz["replies"]
    typed = (r.get("typed failure", 0) + r.get("typed reply (valid body)", 0)) / max(1, fz["requests"])
    return [
        goal("chaos: asks lost in every scenario", sum(f["lost"] for f in s.values()), 0, "≤", ""),
        goal("chaos: calls billed twice beyond those a provider really completed",
             sum(f["billed_beyond_completed"] for f in s.values()), 0, "≤", ""),
        goal("chaos: fuzzed requests (to served subjects) answered typed", round(typed, 4), 1.0, "≥", ""),
        goal("chaos: processes alive after the fuzz", sum(fz["alive"].values()), len(fz["alive"]), "≥", ""),
        goal("chaos: actors answering after the fuzz", sum(fz["answering"].values()), len(fz["answering"]), "≥", ""),
        goal("chaos: overload asks lost", ov["lost"], 0, "≤", ""),
        goal("chaos: router peak RSS under overload", ov["router_peak_rss_mb"], 250.0, "≤", " MB"),
        goal("chaos: slowest answer with a provider copy killed (3.5 s before the attempt deadline)",
             s["kill -9 provider copy"]["max_ms"], 1000.0, "≤", " ms"),
    ]


def report(loop: str, result: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — chaos — {loop}",
                  caption="multi-process: 2 routers, health, cost, 2×p + q (50 ms); 5 s budget, retries=2; "
                          "lost = no reply before the deadline; billed twice = ledger calls − asks (a call a provider "
                          "really completed, then another: allowed); beyond completed = ledger calls − calls providers "
                          "completed (the goal: 0)")
    for col in ("scenario", "asks", "answered", "failed by kind", "lost", "billed twice", "beyond completed",
                "p50 ms", "p99 ms", "max ms", ">1 s"):
        table.add_column(col, justify="left" if col in ("scenario", "failed by kind") else "right")
    for name, f in result["scenarios"].items():
        failed = ", ".join(f"{k} {v}" for k, v in sorted(f["failed"].items())) or "-"
        table.add_row(name, str(f["asks"]), str(f["answered"]), failed, str(f["lost"]), str(f["billed_twice"]),
                      str(f.get("billed_beyond_completed", "-")), f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}", f"{f['max_ms']:.1f}", str(f["over_1s"]))
    console.print(table)
    fz = result["fuzz"]
    fuzz = Table(title=f"llmbus bench — chaos fuzz — {loop}",
                 caption=f"{len(RPC_TABLE)} RPC-table subjects × 9 payloads, then poison events")
    for col in ("replies", "count"):
        fuzz.add_column(col)
    for k, v in sorted(fz["replies"].items()):
        fuzz.add_row(k, str(v))
    fuzz.add_row("processes alive", f"{sum(fz['alive'].values())}/{len(fz['alive'])}")
    fuzz.add_row("actors answering", f"{sum(fz['answering'].values())}/{len(fz['answering'])}")
    console.print(fuzz)
    for line in fz["silent"]:
        console.print(f"  silent: {line}", highlight=False)
    ov = result["overload"]
    console.print(f"overload: {ov['in_flight']:,} asks at once against a 1 s provider: {ov['replies']} in "
                  f"{ov['took_s']} s; overloaded p99 {ov['overloaded_p99_ms']} ms; router RSS {ov['router_rss_mb']} MB "
                  f"(peak {ov['router_peak_rss_mb']} MB); recovered {ov['recovered']}", highlight=False)
