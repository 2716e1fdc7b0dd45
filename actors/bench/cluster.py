"""The ``cluster`` section of ``llmbus bench`` (``llmbus bench chaos --cluster``): three clustered
nats-servers (``bus.server.NatsCluster``), every stream and KV bucket with replicas 3, and the chaos
fleet (``actors.bench.chaos``: 2 routers, health, cost, 2×p + q at 50 ms, one process per actor)
spread over the servers — each process's first seed is its own server, all three are its
reconnect servers. A load of unique asks (64 in flight, 5 s budget, ``retries=2``) runs through:

- ``baseline``; ``kill -9 server`` (n0, with router-1, cost and p-2 on it; a third of the way in,
  kept down to the end). Per scenario: answered, failed by kind, lost, billed beyond completed
  calls, p50/p99/max (the p99 covers the failover), and the budget check (the ledger's spend of the
  scenario's user = the budget's spent figure, and its limit is still there).
- ``restart`` of the killed server: the time until every replica on it is current, then the KV
  contents compared across the three servers (each stream's message count and last sequence on
  each server, from ``/jsz``): diverged streams (the goal: 0).
- ``partition``: n2 is restarted without routes (clients still reach it, it reaches no peer) while
  asks of a user with a budget of ``affordable`` worst cases run (commits shrink each hold to the
  actual cost, so more asks than that fit, and the rest are refused); the goals: the ledger's spend
  stays under the limit (no split-brain grant), and no KV write through the isolated server is
  accepted.
- ``throughput``: zero-latency asks for a few seconds at 128 in flight, with and without a budget
  (a reservation per ask: the KV compare-and-set path), on the cluster (R3, spread) and on one
  nats-server (R1) with the same processes; CPU seconds per 1,000 asks of each process kind and of
  the nats-servers (from /proc), for ``docs/scaling.md``.
- ``scale`` (on the single server): two cost actors with ``cost.shards`` 1 and 16 — reserve +
  commit pairs per second, then reservations left in flight piling up (what rate × provider latency
  means) until a key reaches max_payload; and ledger compaction of a day (write rate, compaction
  time, bucket and mirrored keys before and after).
- ``kv``: the KV-heavy operations alone (a reservation-style compare-and-set, a ledger create, a
  breaker put) on a bucket with 1 and with 3 replicas on the cluster, and on a single server.
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
from rich.console import Console
from rich.table import Table

from bus import messages as m
from bus.client import Client
from bus.connection import rotated
from bus.deadline import deadline_in
from bus.rpc import new_id
from bus.server import NatsCluster, NatsServer
from bus.streams import delete_root, ensure_kv
from bus.subjects import COST_BUDGET_SET, COST_BUDGETS
from actors.bench import chaos
from actors.bench.measure import Progress, drop_jetstream, goal

LAYOUT = {**chaos.LAYOUT, "z": "provider.z"}
SEED_OF = {"router-1": 0, "cost": 0, "p-2": 0, "router-2": 1, "health": 1, "q": 1, "p-1": 2, "z": 2}
ZERO = '\n[providers.z]\nmodel = "z-1"\nlatency = { dist = "fixed", ms = 0 }\n'
PRICE_Z = '[mock."z-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-12-01"\nsource = "bench"\n'
VICTIM, ISOLATED = 0, 2


@dataclass(frozen=True)
class Plan:
    asks: int = 1500  # per scenario
    concurrency: int = 64
    throughput_s: float = 5.0
    kv_ops: int = 2000
    affordable: int = 100  # worst cases the partition scenario's budget holds
    holds: int = 20_000  # reservations left in flight (scale: sharded vs one key)
    ledger: int = 5000  # ledger entries compacted (scale)


FULL = Plan()
QUICK = Plan(asks=300, throughput_s=2.0, kv_ops=300, affordable=40, holds=3000, ledger=1000)


def describe(plan: Plan) -> dict:
    return {"asks": plan.asks, "concurrency": plan.concurrency, "throughput_s": plan.throughput_s,
            "kv_ops": plan.kv_ops, "affordable": plan.affordable}


class ClusterFleet(chaos.Fleet):
    """The chaos fleet on a cluster (``size`` 3) or on one server (``size`` 1)."""

    def __init__(self, stack: AsyncExitStack, tmp: Path, size: int) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(stack, tmp)
        self.size = size
        replicas = 3 if size == 3 else 1
        pricing = tmp / "pricing.toml"
        pricing.write_text(chaos.PRICES + PRICE_Z)
        # max_tokens 16: a reservation's worst case is a few times an answer's actual cost, so the
        # partition scenario's budget binds on spend, not only on what is in flight
        text = chaos.CONFIG.format(root=chaos.ROOT, pricing=pricing).replace(
            "stop_grace_s = 5.0", f"stop_grace_s = 5.0\nreplicas = {replicas}").replace(
            'model = "p-1"', 'model = "p-1"\nmax_tokens = 16').replace('model = "q-1"', 'model = "q-1"\nmax_tokens = 16') + ZERO
        self.config.write_text(text)
        self.cluster: NatsCluster | None = None

    @property
    def url(self) -> str:
        return self.cluster.url if self.cluster is not None else super().url

    def start_server(self) -> None:
        if self.size == 1:
            return super().start_server()
        self.cluster = NatsCluster(3, store=self.tmp / "cluster").start()
        self.stack.callback(self.cluster.stop)

    def servers(self) -> list[NatsServer]:
        return self.cluster.servers if self.cluster is not None else [self.server]

    def url_for(self, proc: str) -> str:
        return rotated(self.url, SEED_OF[proc])  # its own server first, all three to reconnect to

    async def start(self, proc: str, *, config: Path | None = None, actor: str | None = None) -> None:
        await super().start(proc, config=config, actor=actor or LAYOUT[proc])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc: Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_kind(fleet: ClusterFleet) -> dict[str, float]:
    out: Counter = Counter()
    for proc, p in fleet.procs.items():
        if p.poll() is None:
            out[LAYOUT[proc].split(".")[0]] += cpu_s(p.pid)
    out["nats-server"] = sum(cpu_s(s.process.pid) for s in fleet.servers() if s.process is not None)
    return dict(out)


def replica_states(cluster: NatsCluster) -> dict[str, dict[str, tuple[int, int]]]:
    """stream -> server -> (messages, last sequence) of that server's replica (``/jsz``)."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for s in cluster.servers:
        if s.process is None:
            continue
        jsz = s.monitor("/jsz?accounts=true&streams=true")
        for account in jsz.get("account_details") or []:
            for st in account.get("stream_detail") or []:
                state = st.get("state") or {}
                out.setdefault(st["name"], {})[s.name] = (state.get("messages", 0), state.get("last_seq", 0))
    return out


def moved(fleet: ClusterFleet) -> str:
    """How many actor processes are connected to the servers still up ("8/8": all moved off the dead one)."""
    names = [c.get("name", "") for s in fleet.cluster.servers if s.process is not None
             for c in s.monitor("/connz?limit=1024").get("connections") or []]
    return f"{sum(1 for n in names if n.startswith(chaos.ROOT + '-'))}/{len(fleet.procs)}"


def diverged(states: dict[str, dict[str, tuple[int, int]]], servers: int) -> list[str]:
    return [name for name, by in states.items() if len(by) < servers or len(set(by.values())) > 1]


async def set_budget(client: Client, user: str, limit: float) -> None:
    reply = await client.rpc.service(COST_BUDGET_SET, m.BudgetSet(scope="user", name=user, period="day", limit_usd=limit),
                                     deadline=deadline_in(5000))
    if not isinstance(reply, m.BudgetReport):
        raise RuntimeError(f"budget set: {reply}")


async def budget_of(client: Client, user: str) -> m.Budget | None:
    reply = await client.rpc.service(COST_BUDGETS, m.BudgetQuery(), deadline=deadline_in(5000))
    return next((b for b in reply.budgets if b.name == user), None) if isinstance(reply, m.BudgetReport) else None


async def ledger_usd(client: Client, user: str) -> float:
    from bus.subjects import COST_REPORT

    reply = await client.rpc.service(COST_REPORT, m.CostQuery(by="user"), deadline=deadline_in(5000))
    line = next((x for x in reply.lines if x.key == user), None) if isinstance(reply, m.CostReport) else None
    return line.cost_usd if line else 0.0


def worst_case(fleet: ClusterFleet) -> float:
    from actors import settings as settings_mod
    from actors.pure.pricing import Pricing
    from actors.pure.tokens import estimate_tokens

    settings = settings_mod.load(fleet.config)
    p = settings.providers["p"]
    return Pricing.load(settings.pricing_path()).worst_case("mock", p.model, estimate_tokens("chaos"), p.max_tokens)


async def scenario(client: Client, fleet: ClusterFleet, plan: Plan, name: str, fault) -> dict:
    user = "cluster-" + name.replace(" ", "-").replace("9", "nine")
    await set_budget(client, user, 1e6)  # every ask reserves (the KV path) and none is refused
    figures = await chaos.load(client, plan.asks, plan.concurrency, user, plan.asks // 3, fault)
    figures |= await chaos.billed(client, user, figures["answered"])
    budget = await budget_of(client, user)
    spent = await ledger_usd(client, user)
    figures["budget_intact"] = budget is not None and abs(budget.spent_usd - spent) < 1e-9
    figures["user"] = user
    return figures


async def restart(fleet: ClusterFleet, progress: Progress) -> dict:
    t0 = time.perf_counter()
    await anyio.to_thread.run_sync(fleet.cluster.restart, VICTIM)
    await anyio.to_thread.run_sync(fleet.cluster.wait_ready)
    back_s = time.perf_counter() - t0
    give_up = time.monotonic() + 30.0
    while True:
        states = await anyio.to_thread.run_sync(replica_states, fleet.cluster)
        bad = diverged(states, 3)
        if not bad or time.monotonic() > give_up:
            break
        await anyio.sleep(0.1)
    out = {"server_back_s": round(back_s, 2), "caught_up_s": round(time.perf_counter() - t0, 2),
           "streams": len(states), "diverged": bad, "states": {k: sorted(set(v.values())) for k, v in states.items()}}
    progress(f"cluster restart: {out['caught_up_s']} s until every replica is current; diverged {bad}")
    return out


async def partition(client: Client, fleet: ClusterFleet, plan: Plan, progress: Progress) -> dict:
    user = "cluster-partition"
    worst = worst_case(fleet)
    await set_budget(client, user, plan.affordable * worst + worst / 2)
    accepted = tried = 0

    async def fault() -> None:
        nonlocal accepted, tried
        await anyio.to_thread.run_sync(fleet.cluster.isolate, ISOLATED)
        nc = await nats.connect(fleet.cluster.servers[ISOLATED].url)  # pinned to the isolated server
        try:
            js = nc.jetstream(timeout=1.0)
            for i in range(5):
                tried += 1
                try:
                    kv = await js.key_value(f"{chaos.ROOT}_cost")
                    await kv.put(f"split.{i}", b"x")
                    accepted += 1
                except Exception:  # noqa: S112 — refused: no quorum, the goal
                    continue
        finally:
            await nc.close()
        await anyio.sleep(2.0)
        await anyio.to_thread.run_sync(fleet.cluster.restart, ISOLATED)  # heal

    figures = await chaos.load(client, plan.asks, plan.concurrency, user, plan.asks // 3, fault)
    await anyio.to_thread.run_sync(fleet.cluster.wait_ready)
    figures |= await chaos.billed(client, user, figures["answered"])  # the ledger caught up
    spent = await ledger_usd(client, user)
    budget = await budget_of(client, user)
    out = {**figures, "affordable_worst_cases": plan.affordable, "kv_writes_tried": tried,
           "kv_writes_accepted": accepted, "spent_usd": round(spent, 9),
           "budget_spent_usd": round(budget.spent_usd, 9) if budget else None,
           "limit_usd": round(plan.affordable * worst + worst / 2, 9)}
    progress(f"cluster partition: {out}")
    return out


async def throughput(fleet: ClusterFleet, plan: Plan, progress: Progress) -> dict:
    out = {}
    async with Client(fleet.url, root=chaos.ROOT, name="cluster-throughput") as client:
        await set_budget(client, "tp-budget", 1e6)
        for label, user in (("no budget", None), ("budget (reserve per ask)", "tp-budget")):
            done = 0
            took: list[float] = []
            before = cpu_by_kind(fleet)
            stop_at = time.perf_counter() + plan.throughput_s
            t0 = time.perf_counter()

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < stop_at:
                    ask = m.Ask(id=new_id(), messages=[m.Message(role="user", content="chaos")], user=user,
                                providers=["z"], strategy="single", cache="skip", budget_ms=chaos.BUDGET_MS)
                    t = time.perf_counter()
                    reply = await client.send(ask, deadline=deadline_in(chaos.BUDGET_MS), retries=2)
                    if isinstance(reply, m.Answer):
                        done += 1
                        took.append((time.perf_counter() - t) * 1e3)

            async with anyio.create_task_group() as tg:
                for _ in range(128):
                    tg.start_soon(worker)
            elapsed = time.perf_counter() - t0
            after = cpu_by_kind(fleet)
            q = statistics.quantiles(took, n=100, method="inclusive") if len(took) > 1 else [0.0] * 99
            out[label] = {"asks_s": round(done / elapsed, 1), "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2),
                          "cpu_ms_per_ask": {k: round(1e3 * (after.get(k, 0) - before.get(k, 0)) / max(1, done), 3)
                                             for k in after}}
            progress(f"cluster throughput ({fleet.size} server(s)), {label}: {out[label]}")
    return out


async def kv_ops(url: str, root: str, replicas: int, n: int) -> dict:
    """p50/p99 and ops/s of a reservation-style CAS, a ledger create and a breaker put on a bucket."""
    nc = await nats.connect(url.split(","))
    nc.replicas = replicas  # what ensure_kv reads (bus.streams.replicas_of)
    try:
        kv = await ensure_kv(nc, f"{root}_kvbench")
        out = {}
        rev = await kv.put("reservations", b"{}")

        async def cas():
            nonlocal rev
            rev = await kv.update("reservations", b'{"c":1}', last=rev)

        counter = iter(range(10**9))
        for name, op in (("reserve (CAS update)", cas),
                         ("ledger (create)", lambda: kv.create(f"ledger.{next(counter)}", b"{}")),
                         ("breaker (put)", lambda: kv.put("breaker.p", b"{}"))):
            took = []
            t0 = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                await op()
                took.append((time.perf_counter() - t) * 1e3)
            elapsed = time.perf_counter() - t0
            q = statistics.quantiles(took, n=100, method="inclusive")
            out[name] = {"ops_s": round(n / elapsed, 1), "p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3)}
        return out
    finally:
        await delete_root(nc, root)
        await nc.close()


async def run(url: str, plan: Plan = FULL, progress: Progress = lambda s: None) -> dict:
    """``url`` is not used: the section runs its own cluster (and single server)."""
    scenarios: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="llmbus-cluster-bench-") as tmp:
        async with AsyncExitStack() as stack:
            fleet = ClusterFleet(stack, Path(tmp) / "c", 3)
            fleet.start_server()
            progress(f"cluster: 3 servers at {fleet.url}; starting {len(LAYOUT)} actor processes over them")
            async with anyio.create_task_group() as tg:
                for proc in LAYOUT:
                    tg.start_soon(fleet.start, proc)
            client = await stack.enter_async_context(Client(rotated(fleet.url, 1), root=chaos.ROOT, name="cluster-client"))
            progress("cluster: baseline")
            scenarios["baseline"] = await scenario(client, fleet, plan, "baseline", None)

            recovery: dict = {}

            async def kill() -> None:  # then probe: how long until a budgeted ask is answered again
                await anyio.to_thread.run_sync(fleet.cluster.kill, VICTIM)
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < 30.0:
                    ask = m.Ask(id=new_id(), messages=[m.Message(role="user", content="probe")], cache="skip",
                                user="cluster-kill--nine-server", budget_ms=2000)
                    if isinstance(await client.send(ask, deadline=deadline_in(2000)), m.Answer):
                        break
                    await anyio.sleep(0.05)
                recovery["budgeted_asks_answered_again_after_s"] = round(time.perf_counter() - t0, 2)

            progress("cluster: kill -9 of server n0 under load")
            scenarios["kill -9 server"] = await scenario(client, fleet, plan, "kill -9 server", kill)
            scenarios["kill -9 server"] |= recovery
            scenarios["kill -9 server"]["actors_moved"] = await anyio.to_thread.run_sync(moved, fleet)
            caught_up = await restart(fleet, progress)
            parted = await partition(client, fleet, plan, progress)
            completed = await chaos.completed_calls(client.nc)
            for figures in scenarios.values():
                figures["completed_calls"] = done = completed.get(figures.pop("user"), 0)
                figures["billed_beyond_completed"] = max(0, figures["ledger_calls"] - done)
                # answered asks whose provider's usage event never reached the events stream: calls the
                # ledger cannot bill (providers send usage until the stream acknowledges it: 0 expected)
                figures["usage_lost"] = max(0, figures["answered"] - done)
            parted["usage_lost"] = max(0, parted["answered"] - completed.get("cluster-partition", 0))
            for proc in ("router-1", "router-2"):  # the throughput runs start from a fresh pair of routers' state
                fleet.signal(proc, signal.SIGTERM)
                await fleet.start(proc)
            tp3 = await throughput(fleet, plan, progress)
            kv = {"cluster R1": await kv_ops(fleet.url, "kvr1", 1, plan.kv_ops),
                  "cluster R3": await kv_ops(fleet.url, "kvr3", 3, plan.kv_ops)}
        async with AsyncExitStack() as stack:
            single = ClusterFleet(stack, Path(tmp) / "s", 1)
            single.start_server()
            progress("cluster: the same processes on one nats-server (R1)")
            async with anyio.create_task_group() as tg:
                for proc in LAYOUT:
                    tg.start_soon(single.start, proc)
            tp1 = await throughput(single, plan, progress)
            kv["single server R1"] = await kv_ops(single.url, "kvs1", 1, plan.kv_ops)
            scaled = await scale(single.url, plan, progress)
    lost = sum(f["lost"] for f in scenarios.values()) + parted["lost"]
    return {"scenarios": scenarios, "restart": caught_up, "partition": parted,
            "throughput": {"3 servers, R3": tp3, "1 server, R1": tp1}, "kv": kv, "scale": scaled, "failed": lost}


def goals(result: dict) -> list[dict]:
    s, p, r = result["scenarios"], result["partition"], result["restart"]
    return [
        goal("cluster: asks lost (baseline, kill -9 server, partition)",
             sum(f["lost"] for f in s.values()) + p["lost"], 0, "≤", ""),
        goal("cluster: calls billed beyond those providers completed", sum(f["billed_beyond_completed"] for f in s.values()),
             0, "≤", ""),
        goal("cluster: usage lost (answered asks whose usage never reached the events stream)",
             sum(f.get("usage_lost", 0) for f in s.values()) + p.get("usage_lost", 0), 0, "≤", ""),
        goal("cluster: budgets intact (spent = ledger) after kill -9 of a server",
             sum(not f["budget_intact"] for f in s.values()), 0, "≤", ""),
        goal("cluster: streams diverged across servers after the restart", len(r["diverged"]), 0, "≤", ""),
        goal("cluster: partition: ledger spend of the budgeted user over its limit (USD)",
             round(max(0.0, p["spent_usd"] - p["limit_usd"]), 9), 0.0, "≤", ""),
        goal("cluster: partition: KV writes accepted by the isolated server", p["kv_writes_accepted"], 0, "≤", ""),
        goal("cluster: p99 of the answered asks with a server killed under load", s["kill -9 server"]["p99_ms"],
             1000.0, "≤", " ms"),
        goal("cluster: a budgeted ask answered again after kill -9 of a server (raft elections: 4-9 s)",
             s["kill -9 server"].get("budgeted_asks_answered_again_after_s", 30.0), 10.0, "≤", " s"),
    ]


def report(loop: str, result: dict, console: Console) -> None:
    t = Table(title=f"llmbus bench — chaos --cluster — {loop}",
              caption="3 nats-servers, replicas 3; 2 routers, health, cost, 2×p + q (50 ms), one process each, spread "
                      "over the servers; 64 in flight, 5 s budget, retries=2; every ask reserves against a budget")
    for col in ("scenario", "asks", "answered", "failed by kind", "lost", "billed twice", "beyond completed",
                "usage lost", "budget intact", "p50 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="left" if col in ("scenario", "failed by kind") else "right")
    for name, f in result["scenarios"].items():
        failed = ", ".join(f"{k} {v}" for k, v in sorted(f["failed"].items())) or "-"
        t.add_row(name, str(f["asks"]), str(f["answered"]), failed, str(f["lost"]), str(f["billed_twice"]),
                  str(f.get("billed_beyond_completed", "-")), str(f.get("usage_lost", "-")),
                  "yes" if f["budget_intact"] else "NO",
                  f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}", f"{f['max_ms']:.1f}")
    p = result["partition"]
    failed = ", ".join(f"{k} {v}" for k, v in sorted(p["failed"].items())) or "-"
    t.add_row("partition of n2 (budget)", str(p["asks"]), str(p["answered"]), failed, str(p["lost"]),
              str(p["billed_twice"]), "-", str(p.get("usage_lost", "-")), "spent ≤ limit: " + ("yes" if p["spent_usd"] <= p["limit_usd"] else "NO"),
              f"{p['p50_ms']:.1f}", f"{p['p99_ms']:.1f}", f"{p['max_ms']:.1f}")
    console.print(t)
    r = result["restart"]
    k = result["scenarios"]["kill -9 server"]
    console.print(f"kill -9 of n0: actor processes connected to the two servers left {k.get('actors_moved')}; "
                  f"a budgeted ask is answered again {k.get('budgeted_asks_answered_again_after_s')} s "
                  "after the kill (the raft groups n0 led elect new leaders; until then a reservation cannot be "
                  "written and the ask is refused unavailable, typed, never lost)", highlight=False)
    console.print(f"restart of n0: back in {r['server_back_s']} s, every replica current after {r['caught_up_s']} s; "
                  f"{r['streams']} streams compared across 3 servers, diverged: {r['diverged'] or 'none'}; partition: "
                  f"{p['kv_writes_accepted']}/{p['kv_writes_tried']} KV writes through the isolated server accepted; "
                  f"spent ${p['spent_usd']:.6f} of ${p['limit_usd']:.6f}", highlight=False)
    tp = Table(title=f"throughput, zero-latency provider, 128 in flight — {loop}")
    for col in ("layout", "path", "asks/s", "p50 ms", "p99 ms", "CPU ms per ask by process kind"):
        tp.add_column(col, justify="left" if col in ("layout", "path", "CPU ms per ask by process kind") else "right")
    for layout, paths in result["throughput"].items():
        for path, f in paths.items():
            cpu = ", ".join(f"{k} {v:.3f}" for k, v in sorted(f["cpu_ms_per_ask"].items()))
            tp.add_row(layout, path, f"{f['asks_s']:.0f}", f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", cpu)
    console.print(tp)
    three, one = result["throughput"]["3 servers, R3"], result["throughput"]["1 server, R1"]
    console.print("ratios (3 servers R3 / 1 server R1): " + ", ".join(
        f"{k} {three[k]['asks_s'] / max(1e-9, one[k]['asks_s']):.2f}×" for k in three), highlight=False)
    kv = Table(title=f"KV-heavy paths, one client, sequential — {loop}")
    for col in ("bucket", "operation", "ops/s", "p50 ms", "p99 ms"):
        kv.add_column(col, justify="left" if col in ("bucket", "operation") else "right")
    for where, ops in result["kv"].items():
        for op, f in ops.items():
            kv.add_row(where, op, f"{f['ops_s']:.0f}", f"{f['p50_ms']:.3f}", f"{f['p99_ms']:.3f}")
    console.print(kv)
    r3, r1 = result["kv"]["cluster R3"], result["kv"]["cluster R1"]
    console.print("cost of replicas 3 (R3 p50 / R1 p50 on the cluster): " + ", ".join(
        f"{op} {r3[op]['p50_ms'] / max(1e-9, r1[op]['p50_ms']):.2f}×" for op in r3), highlight=False)
    if "scale" in result:
        report_scale(loop, result["scale"], console)


# --- what 10k asks/s needs of the cost actor: sharded reservations, ledger compaction -------------

SCALE_TOML = """
[bus]
root = "{root}"
[cost]
pricing = "{pricing}"
shards = {shards}
compact_after_days = 2
[providers.p]
model = "p-1"
"""


async def _cost_pair(url: str, tmp: Path, root: str, shards: int):
    from actors import settings as settings_mod
    from actors.stack import build_actor

    pricing = tmp / "scale-pricing.toml"
    pricing.write_text(chaos.PRICES)
    settings = settings_mod.parse(SCALE_TOML.format(root=root, pricing=pricing, shards=shards), "bench")
    return [build_actor("cost", settings), build_actor("cost", settings)]


async def budget_paths(url: str, tmp: Path, shards: int, plan: Plan, progress: Progress) -> dict:
    """Two cost actors: reserve + commit pairs of ``users`` users (each with a budget) at 256 in flight,
    then holds left in flight (a provider latency of seconds at thousands of asks/s) until ``holds``."""
    from actors.runtime import run_actors
    from bus.subjects import COST_COMMIT, COST_RESERVE

    root = f"scale{shards}"
    users = 200
    actors = await _cost_pair(url, tmp, root, shards)
    out: dict = {"shards": shards}
    async with anyio.create_task_group() as tg:
        await tg.start(run_actors, actors, url)
        async with Client(url, root=root, name="scale-client") as client:
            for i in range(users):
                await set_budget(client, f"u{i}", 1e6)
            while any(len(a.limits) < users for a in actors):
                await anyio.sleep(0.05)

            async def pairs(n: int, commit: bool) -> tuple[int, list[float]]:
                took, failed, it = [], 0, iter(range(n))

                async def worker() -> None:
                    nonlocal failed
                    for i in it:
                        cid = new_id()
                        t = time.perf_counter()
                        r = await client.rpc.service(COST_RESERVE, m.Reserve(call_id=cid, ask_id=cid, amount_usd=1e-6,
                                                     user=f"u{i % users}", expires_at=time.time() + 120),
                                                     deadline=deadline_in(5000))
                        if commit and isinstance(r, m.Reserved):  # as the router does: published, not awaited
                            await client.rpc.tell(COST_COMMIT, m.Commit(call_id=cid, actual_usd=0.0, user=f"u{i % users}"))
                        if isinstance(r, m.Reserved):
                            took.append((time.perf_counter() - t) * 1e3)
                        else:
                            failed += 1

                async with anyio.create_task_group() as g:
                    for _ in range(256):
                        g.start_soon(worker)
                return failed, took

            t0 = time.perf_counter()
            failed, took = await pairs(plan.kv_ops * 2, True)
            q = statistics.quantiles(took, n=100, method="inclusive") if len(took) > 1 else [0.0] * 99
            out["reserve+commit"] = {"pairs_s": round(len(took) / (time.perf_counter() - t0), 1),
                                     "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "failed": failed}
            growth = []
            held = 0
            while held < plan.holds:  # reservations of calls still in flight pile up in the keys
                t0 = time.perf_counter()
                failed, took = await pairs(plan.holds // 5, False)
                held += len(took)
                largest = 0
                for key in actors[0].reservations_keys():
                    try:
                        largest = max(largest, len((await actors[0].kv.get(key)).value or b""))
                    except Exception:  # noqa: S112 — a shard not written yet
                        continue
                growth.append({"holds": held, "reserves_s": round(len(took) / (time.perf_counter() - t0), 1),
                               "failed": failed, "largest_key_kb": round(largest / 1024, 1)})
                if failed:
                    break
            out["holds"] = growth
            progress(f"cluster scale: shards {shards}: {out}")
        for a in actors:
            a.stop()
    await drop_jetstream(url, [root])
    return out


async def ledger_compaction(url: str, tmp: Path, plan: Plan, progress: Progress) -> dict:
    """``plan.ledger`` usage events of a day 3 days ago into the ledger (two cost actors), then that
    day compacted: ledger write rate, compaction time, bucket messages and mirrored keys before/after."""
    from actors.runtime import run_actors
    from bus import codec

    root = "scaleledger"
    actors = await _cost_pair(url, tmp, root, 1)
    old = time.time() - 3 * 86400
    out: dict = {"entries": plan.ledger}
    async with anyio.create_task_group() as tg:
        await tg.start(run_actors, actors, url)
        async with Client(url, root=root, name="scale-ledger") as client:
            subject = client.subjects.usage("p")
            t0 = time.perf_counter()
            for i in range(plan.ledger):
                usage = m.Usage(ask_id=f"a{i}", call_id="c", provider="p", model="p-1",
                                usage=m.TokenUsage(input_tokens=100, output_tokens=20), user=f"u{i % 100}", at=old)
                await client.nc.publish(subject, codec.encode(usage))
            while any(len(a.totals.seen) < plan.ledger for a in actors):
                await anyio.sleep(0.05)
            out["ledger_writes_s"] = round(plan.ledger / (time.perf_counter() - t0), 1)
            js = client.nc.jetstream()
            bucket = f"KV_{client.subjects.bucket('cost')}"
            before = (await js.stream_info(bucket)).state
            out["before"] = {"messages": before.messages, "bytes": before.bytes,
                             "mirrored_keys": len(actors[1].ledger_mirror.values)}
            t0 = time.perf_counter()
            days = await actors[0].compact_due()
            while any(not a.totals.compacted for a in actors):
                await anyio.sleep(0.01)
            out["compact_s"] = round(time.perf_counter() - t0, 3)
            after = (await js.stream_info(bucket)).state
            out["after"] = {"messages": after.messages, "bytes": after.bytes,
                            "mirrored_keys": len(actors[1].ledger_mirror.values)}
            out["days"] = days
            t0 = time.perf_counter()
            actors[1].totals.report("user", None)
            out["report_ms_after"] = round((time.perf_counter() - t0) * 1e3, 2)
            progress(f"cluster scale: ledger compaction: {out}")
        for a in actors:
            a.stop()
    await drop_jetstream(url, [root])
    return out


async def scale(url: str, plan: Plan, progress: Progress) -> dict:
    with tempfile.TemporaryDirectory(prefix="llmbus-scale-") as tmp:
        return {"budgets": [await budget_paths(url, Path(tmp), n, plan, progress) for n in (1, 16)],
                "ledger": await ledger_compaction(url, Path(tmp), plan, progress)}


def report_scale(loop: str, scaled: dict, console: Console) -> None:
    t = Table(title=f"budgets at scale: 2 cost actors, 200 users with a budget, 256 in flight — {loop}",
              caption="holds = reservations of calls still in flight (rate × provider latency); a KV value is at "
                      "most max_payload (1 MB)")
    for col in ("shards", "reserve+commit /s", "p50 ms", "p99 ms", "holds in flight", "reserves/s then",
                "largest key KB", "refused"):
        t.add_column(col, justify="right")
    for b in scaled["budgets"]:
        rc = b["reserve+commit"]
        for i, h in enumerate(b["holds"]):
            t.add_row(str(b["shards"]) if i == 0 else "", f"{rc['pairs_s']:.0f}" if i == 0 else "",
                      f"{rc['p50_ms']:.1f}" if i == 0 else "", f"{rc['p99_ms']:.1f}" if i == 0 else "",
                      str(h["holds"]), f"{h['reserves_s']:.0f}", f"{h['largest_key_kb']:.0f}", str(h["failed"]))
    console.print(t)
    led = scaled["ledger"]
    console.print(f"ledger compaction: {led['entries']} entries written at {led['ledger_writes_s']:.0f}/s; one day "
                  f"compacted in {led['compact_s'] * 1e3:.0f} ms: bucket {led['before']['messages']} messages "
                  f"({led['before']['bytes'] / 1024:.0f} KB) → {led['after']['messages']} "
                  f"({led['after']['bytes'] / 1024:.0f} KB), keys mirrored by each cost actor "
                  f"{led['before']['mirrored_keys']} → {led['after']['mirrored_keys']}", highlight=False)
