"""``llmbus bench``: llmbus against a bare nats-py floor, measured in the same run.

Sections (``--only core,health,adapters,cache,cost``, default all; each runs once per event loop):

- ``core`` (this module): the paths below, one-process and multi-process.
- ``health`` (``actors.bench.sections``): ``llmbus single`` with the router's breaker check on vs
  off (p50/p99, throughput at 64 in flight), and how fast a breaker transition written to KV
  reaches each of 3 routers (goal: all within 50 ms at p99).
- ``adapters`` (``actors.bench.sections``): per SDK kind (openai, anthropic, gemini), the raw SDK
  call against a zero-latency ``WireServer`` vs a ``Complete`` through the llmbus provider actor
  using that SDK, with the bare one-hop figure beside it.
- ``cache`` (``actors.bench.cache``): a cache hit (from memory, from disk) and a miss against the
  zero-latency provider path (goal: a hit is no slower).
- ``cost`` (``actors.bench.cost``): an ask whose user has a budget (a reservation round trip) against
  one without.

Core paths, each measured for sequential p50/p99 latency and for throughput at N asks in flight:

- ``bare one-hop``: a raw muxed requester → a responder whose callback republishes the payload.
- ``bare two-hop``: client → a minimal raw router (msgspec-decode the Ask, build a ``Complete``,
  forward it with ``Llm-Budget-Ms``/``Llm-Ask-Id`` through its own muxed reply subscription, decode
  the ``Completion``, reply with an ``Answer``) → a minimal raw provider. Same message types (so
  the same JSON), same two headers, one NATS connection per role, no deadlines enforced,
  no admission, no events.
- ``llmbus single`` / ``llmbus failover``: client → ``Router`` → ``MockProvider`` with 0 ms latency;
  failover first meets a provider that always answers ``unavailable`` (every answer's route is
  checked to show it).

Client side: both two-hop paths use exactly the same code, ``Client.send`` with a prepared ``Ask``
(only a fresh id per ask) — the bare router serves ``bench-bare.ask`` and answers an ``Answer``, so
the comparison isolates the router/provider side. Two layouts: every role in this process (one
event loop), and router and providers each in their own process (llmbus: ``llmbus actor …``;
bare: ``python -m actors.bench _bare <role> URL``). The bench runs its own nats-server (temporary
store); llmbus providers keep their outcome/usage events in JetStream as in production, the bare
provider publishes none. The router's dedup table fills up over the run, as it would under
sustained load. Exit code: 0 when every ask (and every breaker transition) was answered (goals
are reported, not enforced), 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from rich.console import Console
from rich.table import Table

from bus import codec
from bus import messages as m
from bus.client import Client
from bus.connection import connect
from bus.deadline import deadline_from, deadline_in, headers_for, now
from bus.rpc import new_id
from bus.server import NatsServer, terminate
from bus.subjects import ROUTER_QUEUE, Subjects
from actors.pure.tokens import count_words
from actors.runtime import run_actors
from actors.settings import parse
from actors.stack import build_actors

ROOT, BARE = Subjects("bench"), Subjects("bench-bare")
BUDGET_MS = 30_000
SECTIONS = ("core", "health", "adapters", "cache", "cost")
LAYOUTS = ("one-process", "multi-process")
PATHS = ("bare one-hop", "bare two-hop", "llmbus single", "llmbus failover")
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
ASKS = {  # the prepared Ask of each two-hop path (a fresh id per ask)
    "bare two-hop": m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"]),
    "llmbus single": m.Ask(id="", messages=PROMPT, strategy="single", providers=["zero"]),
    "llmbus failover": m.Ask(id="", messages=PROMPT, strategy="failover", providers=["fail", "zero"]),
}
err = Console(stderr=True)
Send = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Plan:
    warmup: int = 200
    samples: int = 2000
    seconds: float = 3.0  # per path and concurrency, or ``max_asks``, whichever first …
    max_asks: int = 10_000
    rounds: int = 3  # … split in rounds, the paths taking turns
    concurrency: tuple[int, ...] = (64, 256)


FULL, QUICK = Plan(), Plan(warmup=50, samples=300, seconds=1.0, rounds=2)


# --- the bare floor: raw nats-py + msgspec -------------------------------------------------------


class Muxed:
    """Raw muxed requests: one wildcard reply subscription, a future per request token."""

    def __init__(self, nc, prefix: str) -> None:
        self.nc, self.prefix, self.pending, self.token = nc, prefix + ".", {}, 0

    async def start(self) -> Muxed:
        cut = len(self.prefix)

        async def on_reply(msg) -> None:
            fut = self.pending.pop(msg.subject[cut:], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

        await self.nc.subscribe(self.prefix + "*", cb=on_reply)
        return self

    async def request(self, subject: str, payload: bytes, headers: dict, timeout: float | None = None):
        self.token += 1
        token = str(self.token)
        fut = self.pending[token] = asyncio.get_running_loop().create_future()
        await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
        if timeout is None:  # the bare router: its caller's deadline bounds the wait
            return await fut
        async with asyncio.timeout(timeout):
            return await fut


async def bare_role(role: str, url: str, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the bare ``provider`` (Complete → Completion, plus the one-hop echo) or ``router``."""
    nc = await connect(url, name=f"bench-bare-{role}")
    try:
        if role == "provider":
            async def on_complete(msg) -> None:
                req = codec.complete.decode(msg.data)
                prompt = "\n".join(x.text() for x in req.messages if x.role == "user")
                text = f"[zero] {prompt}"
                out = m.Completion(
                    id=req.id, ask_id=req.ask_id, provider="zero", model="zero-1", text=text,
                    usage=m.TokenUsage(input_tokens=count_words(prompt), output_tokens=count_words(text)),
                    confidence=0.9,
                )
                await nc.publish(msg.reply, codec.encode(out))

            async def on_echo(msg) -> None:
                await nc.publish(msg.reply, msg.data)

            await nc.subscribe(BARE.provider_complete("zero"), queue=BARE.provider_queue("zero"), cb=on_complete)
            await nc.subscribe(BARE.service("bare", "echo"), cb=on_echo)
        else:
            mux = await Muxed(nc, BARE.reply_prefix(new_id())).start()
            target, loop, tasks = BARE.provider_complete("zero"), asyncio.get_running_loop(), set()

            async def handle(msg, deadline: float) -> None:
                ask, started = codec.ask.decode(msg.data), now()
                req = m.Complete(id=new_id(), ask_id=ask.id, messages=ask.messages, schema=ask.schema,
                                 tools=ask.tools, params=ask.params, tier=ask.tier, user=ask.user)
                got = await mux.request(target, codec.encode(req), headers_for(deadline, ask.id))
                done = codec.complete_reply.decode(got.data)
                answer = m.Answer(
                    id=ask.id, text=done.text, confidence=done.confidence, providers=[done.provider],
                    usage=done.usage, route=[m.Step(provider="zero", outcome="ok", ms=round((now() - started) * 1e3, 3))],
                )
                await nc.publish(msg.reply, codec.encode(answer))

            async def on_ask(msg) -> None:  # a task per ask: a `cb` runs one message at a time
                task = loop.create_task(handle(msg, deadline_from(msg.headers, arrival=now(), fallback_ms=BUDGET_MS)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            await nc.subscribe(BARE.ask, queue=ROUTER_QUEUE, cb=on_ask)

        async def on_ping(msg) -> None:
            await nc.publish(msg.reply, b"pong")

        await nc.subscribe(BARE.service("ping", role), cb=on_ping)
        await nc.flush()
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


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


async def measure(sends: dict[str, Send], plan: Plan, progress: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
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
    figures = {}
    for p, ms in took.items():
        q = statistics.quantiles(ms, n=100, method="inclusive")
        figures[p] = {"p50_ms": round(q[49], 4), "p99_ms": round(q[98], 4), "asks_per_s": {}}
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


def one_hop_send(mux: Muxed) -> Send:
    base, subject = ASKS["bare two-hop"], BARE.service("bare", "echo")

    async def send() -> bool:
        ask = msgspec.structs.replace(base, id=new_id())
        got = await mux.request(subject, codec.encode(ask), headers_for(deadline_in(BUDGET_MS), ask.id), timeout=10)
        return bool(got.data)

    return send


def failed_over(answer: m.Answer) -> bool:
    return [(s.provider, s.outcome) for s in answer.route] == [("fail", m.UNAVAILABLE), ("zero", "ok")]


# --- layouts -----------------------------------------------------------------------------------


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


async def measure_layout(url: str, layout: str, plan: Plan, *, paths=PATHS, uvloop: bool = False,
                         progress: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
    """Start what ``paths`` need in ``layout``, measure each path, stop everything: {path: figures}."""
    bare = (["provider"] if any(p.startswith("bare") for p in paths) else []) + (
        ["router"] if "bare two-hop" in paths else [])
    names = ["router", "provider.zero", *(["provider.fail"] if "llmbus failover" in paths else [])]
    names = names if any(p.startswith("llmbus") for p in paths) else []
    async with AsyncExitStack() as stack:  # unwinds: clients, subprocesses, then in-process roles
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        if layout == "one-process":
            for role in bare:
                await tg.start(bare_role, role, url)
            if names:
                await tg.start(run_actors, build_actors(parse(CONFIG, "actors.bench").check(), names), url)
        else:
            config = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".toml"))
            config.write(CONFIG)
            config.flush()
            nc = await connect(url, name="bench-ready")
            stack.push_async_callback(nc.close)
            procs = [(BARE.service("ping", r), spawn(["actors.bench", "_bare", r, url], uvloop, stack))
                     for r in bare]
            procs += [(f"$SRV.PING.{ROOT.root}-{n.replace('.', '-')}",
                       spawn(["actors.cli", "actor", n, "--nats-url", url, "--config", config.name], uvloop, stack))
                      for n in names]
            for subject, proc in procs:
                await wait_ready(nc, subject, proc)
        progress(f"{layout}: ready; measuring {', '.join(paths)}")
        sends: dict[str, Send] = {}
        for p in paths:
            if p == "bare one-hop":
                nc1 = await connect(url, name="bench-client")
                stack.push_async_callback(nc1.close)
                sends[p] = one_hop_send(await Muxed(nc1, BARE.reply_prefix(new_id())).start())
            else:
                client = await stack.enter_async_context(
                    Client(url, root=(BARE if p.startswith("bare") else ROOT).root, name="bench-client"))
                sends[p] = client_send(client, ASKS[p], failed_over if p == "llmbus failover" else lambda a: True)
        results = await measure(sends, plan, lambda s: progress(f"{layout}: {s}"))
        for p, f in results.items():
            rates = ", ".join(f"@{c} {r:,.0f}/s" for c, r in f["asks_per_s"].items())
            progress(f"{layout} {p}: p50 {f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms, {rates}")
    return results


# --- comparison and report ---------------------------------------------------------------------


def flat(f: dict) -> dict[str, float]:
    return {"p50_ms": f["p50_ms"], "p99_ms": f["p99_ms"], **{f"asks_per_s@{c}": r for c, r in f["asks_per_s"].items()}}


def compare(layouts: dict[str, dict[str, dict]]) -> dict:
    """Ratios (llmbus / bare two-hop), failover cost and goal checks for one loop's figures."""
    ratios, adds, goals = {}, {}, []
    for layout, fig in layouts.items():
        bare = flat(fig["bare two-hop"])
        ratios[layout] = {p: {k: round(v / bare[k], 3) for k, v in flat(fig[p]).items()}
                          for p in ("llmbus single", "llmbus failover")}
        adds[layout] = round(fig["llmbus failover"]["p50_ms"] - fig["llmbus single"]["p50_ms"], 4)
        r = ratios[layout]["llmbus single"]
        goals.append(goal(f"{layout}: ask p50 ≤ 1.3× bare two-hop", r["p50_ms"], 1.3, "≤", "×"))
        for c in fig["llmbus single"]["asks_per_s"]:
            goals.append(goal(f"{layout}: throughput @{c} ≥ 0.7× bare", r[f"asks_per_s@{c}"], 0.7, "≥", "×"))
        goals.append(goal(f"{layout}: failover adds ≤ 1 ms over single", adds[layout], 1.0, "≤", " ms"))
    return {"ratios": ratios, "failover_adds_ms": adds, "goals": goals}


def goal(name: str, value: float, limit: float, op: str, unit: str) -> dict:
    margin = round(limit - value if op == "≤" else value - limit, 4)
    return {"goal": name, "value": value, "limit": limit, "unit": unit, "pass": margin >= 0, "margin": margin}


def report(loop: str, result: dict, console: Console) -> None:
    """Print one loop's figures: the core table (when measured), the other sections', then every goal."""
    if "layouts" in result:
        report_core(loop, result, console)
    if "health" in result or "adapters" in result:
        from actors.bench import sections

        if "health" in result:
            sections.report_health(loop, result["health"], console)
        if "adapters" in result:
            sections.report_adapters(loop, result["adapters"], console)
    if "cache" in result:
        from actors.bench.cache import report_cache

        report_cache(loop, result["cache"], console)
    if "cost" in result:
        from actors.bench.cost import report_cost

        report_cost(loop, result["cost"], console)
    for g in result["goals"]:
        verdict = "[green]PASS[/green]" if g["pass"] else "[red]MISS[/red]"
        console.print(f"{verdict} {g['goal']}: {g['value']:.3f}{g['unit']} (margin {g['margin']:+.3f}{g['unit']})",
                      highlight=False)


def report_core(loop: str, result: dict, console: Console) -> None:
    table = Table(title=f"llmbus bench — {loop}",
                  caption="bare: the raw nats-py two-hop floor (one-hop: bare only); ratio: llmbus / bare")
    for col in ("layout", "path", "metric", "bare", "llmbus", "ratio"):
        table.add_column(col, justify="right" if col in ("bare", "llmbus", "ratio") else "left")
    show = lambda k, v: f"{v:,.0f}" if k.startswith("asks") else f"{v:.3f}"  # noqa: E731
    for layout, fig in result["layouts"].items():
        for k, v in flat(fig["bare one-hop"]).items():
            table.add_row(layout, "one-hop", k.replace("_ms", " ms").replace("_per_s@", "/s @"), show(k, v), "", "")
        bare = flat(fig["bare two-hop"])
        for p in ("llmbus single", "llmbus failover"):
            for k, v in flat(fig[p]).items():
                table.add_row(layout, p.removeprefix("llmbus "), k.replace("_ms", " ms").replace("_per_s@", "/s @"),
                              show(k, bare[k]), show(k, v), f"{result['ratios'][layout][p][k]:.2f}×")
        table.add_section()
    console.print(table)
    for layout, ms in result["failover_adds_ms"].items():
        console.print(f"{layout}: failover adds {ms:.3f} ms over single (p50)", highlight=False)


async def run_loop(url: str, plan: Plan, loop: str, sections: tuple[str, ...] = SECTIONS,
                   section_plan=None, quick: bool = False) -> dict:
    say = lambda s: err.print(f"[dim]\\[{loop}][/dim] {s}", highlight=False)  # noqa: E731
    result: dict = {"goals": []}
    if "core" in sections:
        layouts = {lay: await measure_layout(url, lay, plan, uvloop=loop == "uvloop", progress=say) for lay in LAYOUTS}
        result = {"layouts": layouts, **compare(layouts)}
    if "health" in sections or "adapters" in sections:
        from actors.bench import sections as bs  # imported here: it builds on this module

        section_plan = section_plan or bs.SECTIONS_FULL
        if "health" in sections:
            result["health"] = await bs.measure_health(url, section_plan, say)
            result["goals"] += bs.health_goals(result["health"])
        if "adapters" in sections:
            result["adapters"] = await bs.measure_adapters(url, section_plan.adapters, say)
    if "cache" in sections:
        from actors.bench import cache as bc

        result["cache"] = await bc.measure_cache(url, bc.CACHE_QUICK if quick else bc.CACHE_FULL, say)
        result["goals"] += bc.cache_goals(result["cache"])
    if "cost" in sections:
        from actors.bench import cost as bk

        result["cost"] = await bk.measure_cost(url, bk.COST_QUICK if quick else bk.COST_FULL, say)
    return result


def failures(result: dict) -> int:
    """Unanswered asks (and lost breaker transitions) in one loop's result."""
    core = sum(f["failed"] for lay in result.get("layouts", {}).values() for f in lay.values())
    return core + sum(result[s]["failed"] for s in ("health", "adapters", "cache", "cost") if s in result)


def parse_sections(only: str) -> tuple[str, ...] | None:
    wanted = {s.strip() for s in only.split(",") if s.strip()}
    if not wanted or wanted - set(SECTIONS):
        return None
    return tuple(s for s in SECTIONS if s in wanted)


def main(*, json_out: bool, quick: bool, loop: str, only: str = ",".join(SECTIONS)) -> int:
    loops = {"both": ["asyncio", "uvloop"], "asyncio": ["asyncio"], "uvloop": ["uvloop"]}.get(loop)
    if loops is None:
        err.print(f"[red]unknown loop {loop!r}[/red]: asyncio | uvloop | both")
        return 2
    sections = parse_sections(only)
    if sections is None:
        err.print(f"[red]bad --only {only!r}[/red]: a comma list of {', '.join(SECTIONS)}")
        return 2
    if "uvloop" in loops:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            err.print("[red]uvloop is not installed[/red] (pip install 'llmbus[fast]')")
            return 2
    if not structlog.is_configured():  # called outside the CLI: keep stdout for the figures
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    plan = QUICK if quick else FULL
    plans = {"core": asdict(plan)} if "core" in sections else {}
    section_plan = None
    if set(sections) - {"core"}:
        from actors.bench import sections as bs

        section_plan = bs.SECTIONS_QUICK if quick else bs.SECTIONS_FULL
        plans.update(bs.plan_dict(section_plan, list(sections)))
    out = {"sections": list(sections), "plan": plans,
           "client": "Client.send with a prepared Ask (both two-hop paths)",
           "python": sys.version.split()[0], "cpus": os.cpu_count(), "loops": {}}
    try:
        with NatsServer() as server:
            err.print(f"nats-server at {server.url}; sections {', '.join(sections)}; plan {plans}", highlight=False)
            for name in loops:
                options = {"use_uvloop": True} if name == "uvloop" else {}
                out["loops"][name] = anyio.run(run_loop, server.url, plan, name, sections, section_plan, quick,
                                               backend="asyncio", backend_options=options)
    except Exception as exc:  # a role that did not start, a lost connection…: say what, exit 1
        err.print(f"[red]bench failed:[/red] {exc!r}", highlight=False)
        return 1
    failed = sum(failures(r) for r in out["loops"].values())
    out["failed_asks"] = failed
    if json_out:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        for name, result in out["loops"].items():
            report(name, result, Console())
    if failed:
        err.print(f"[red]{failed} asks failed[/red]")
    return 1 if failed else 0


def _child(argv: list[str]) -> int:
    """``python -m actors.bench _bare provider|router URL [--uvloop]``: one bare role, until killed."""
    if len(argv) < 3 or argv[0] != "_bare" or argv[1] not in ("provider", "router"):
        print("usage: python -m actors.bench _bare provider|router URL [--uvloop]", file=sys.stderr)
        return 2
    anyio.run(bare_role, argv[1], argv[2], backend="asyncio",
              backend_options={"use_uvloop": True} if "--uvloop" in argv else {})
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
