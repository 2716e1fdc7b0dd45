"""``llmbus bench``: llmbus measured against a bare nats-py floor and against itself, in one run.

Sections (``--only core,health,adapters,cache,cost``, default all; each runs once per event loop),
one module each, all with the same interface (``FULL`` / ``QUICK`` plans, ``describe(plan)``,
``async run(url, plan, progress) -> figures``, ``goals(figures)``, ``report(loop, figures,
console)``), all measuring with ``actors.bench.measure``:

- ``core`` (``actors.bench.core``): llmbus single/failover against the bare one-hop and two-hop
  floor (``actors.bench.bare``), one-process and multi-process.
- ``health`` (``actors.bench.health``): ``llmbus single`` with the router's breaker check on vs
  off (p50/p99, throughput at 64 in flight), and how fast a breaker transition written to KV
  reaches each of 3 routers (goal: all within 50 ms at p99).
- ``adapters`` (``actors.bench.adapters``): per SDK kind (openai, anthropic, gemini), the raw SDK
  call against a zero-latency ``WireServer`` vs a ``Complete`` through the llmbus provider actor
  using that SDK, with the bare one-hop figure beside it.
- ``cache`` (``actors.bench.cache``): a cache hit (from memory, from disk) and a miss against the
  zero-latency provider path (goal: a hit is no slower).
- ``cost`` (``actors.bench.cost``): an ask whose user has a budget (a reservation round trip) against
  one without.
- ``ensembles`` (``actors.bench.ensembles``, only with ``--only ensembles``): consensus over three
  zero-latency mocks against single (p50, throughput), the merge of 5 answers × 50 fields, and the
  simulated extraction's accuracy table (each single provider, max-confidence, majority, consensus,
  the Bayes optimum), with the ensembles issue's goals.
- ``gateway`` (``actors.bench.gateway``, only with ``--only gateway``): an HTTP ask through the
  gateway (httptools, h11, a bare ASGI function) against a bus ask: p50, throughput at 64.
- ``priority`` (``actors.bench.priority``, only with ``--only priority``): premium asks alone, then
  beside free asks at twice a full router's capacity, with and without priorities (p95, shed).
- ``dashboard`` (``actors.bench.dashboard``, only with ``--only dashboard``): asks/s and p50 of a
  stack with no dashboard, an idle one, and one watched by an open page (it receives every reply).
- ``chaos`` (``actors.bench.chaos``, only with ``--only chaos``): a multi-process stack under kill -9,
  SIGTERM and nats-server restarts (lost, failed by kind, billed twice, p50/p99), a fuzz of every
  RPC-table subject and poison events, and 10,000 asks in flight against a 1 s provider.
- ``images`` (``actors.bench.images``, only with ``--only images``): an image ask inline vs through
  the JetStream object store, and with a tier quota's reservation (p50, p99, throughput at 16).
- ``cluster`` (``actors.bench.cluster``, only with ``--only cluster`` or ``llmbus bench chaos
  --cluster``): three clustered nats-servers with replicas 3 under the chaos fleet: kill -9 of a
  server under load, its restart (replicas compared across servers), a partition of one server
  (no split-brain budget writes), throughput 3 servers vs 1, the cost of replicas 3 on KV paths.

The bench runs its own nats-server (temporary store). A loop's result holds the core figures at
its top level (``layouts``, ``ratios``, ``failover_adds_ms``), then ``goals`` (every section's),
then each other section's figures under its name. Exit code: 0 when every ask (and every breaker
transition) was answered (goals are reported, not enforced), 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import anyio
import structlog
from rich.console import Console
from rich.markup import escape

from bus.server import NatsServer
from actors.bench import adapters, cache, chaos, core, cost, ensembles, health, record, routing
from actors.bench import documents, priority
from actors.bench import gateway
from actors.bench import images
from actors.bench import cluster as cluster_section
from actors.bench import dashboard as dashboard_section

SECTIONS = {"core": core, "health": health, "adapters": adapters, "cache": cache, "cost": cost,
            "routing": routing,  # routing: the policies on a virtual clock (actors.bench.routing)
            "chaos": chaos,  # chaos: kill -9, restarts, fuzz, overload — minutes, so only when named
            "ensembles": ensembles,  # ensembles: consensus cost and the simulation — only when named
            "record": record}  # record: recording all vs off (issue 17) — only when named
DEFAULT = tuple(s for s in SECTIONS if s not in ("chaos", "ensembles", "record"))
SECTIONS["documents"] = documents  # documents: extraction libraries, the cache (issue 16) — only when named
SECTIONS["cluster"] = cluster_section  # cluster: chaos on 3 clustered servers (issue 19) — only when named
SECTIONS["priority"] = priority  # priority: premium p95 while free asks overflow (issue 15) — only when named
SECTIONS["images"] = images  # images: inline vs object store, the quota reservation (issue 20) — only when named
SECTIONS["dashboard"] = dashboard_section  # dashboard: its cost, idle and watched (issue 18) — only when named
SECTIONS["gateway"] = gateway  # gateway: HTTP through the gateway vs a bus ask (issue 18) — only when named
err = Console(stderr=True, emoji=False, soft_wrap=True)  # a progress line is never wrapped


def figures_of(name: str, result: dict) -> dict | None:
    """One section's figures in a loop's result (the core's are the result itself), or None."""
    if name == "core":
        return result if "layouts" in result else None
    return result.get(name)


class Progress:
    """How far the run is: sections done of all (every loop's), elapsed time and a rough ETA."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = f", ~{elapsed / self.done * (self.total - self.done):.0f}s left" if self.done else ""
        return f"{100 * self.done // self.total:3d}% {elapsed:5.1f}s{eta}"


async def run_loop(url: str, loop: str, plans: dict[str, object], progress: Progress | None = None) -> dict:
    """Every section of ``plans`` in turn, on this event loop: the loop's result."""
    def say(s: str) -> None:
        where = f"{progress.line()} " if progress is not None else ""
        err.print(f"[dim]{where}\\[{loop}][/dim] {escape(s)}", highlight=False)

    top, goals, nested = {}, [], {}
    for name, plan in plans.items():
        figures = await SECTIONS[name].run(url, plan, say)
        if progress is not None:
            progress.done += 1
        goals += SECTIONS[name].goals(figures)
        if name == "core":
            top = figures
        else:
            nested[name] = figures
    return {**top, "goals": goals, **nested}


def failures(result: dict) -> int:
    """Unanswered asks (and lost breaker transitions) in one loop's result."""
    total = 0
    for name in SECTIONS:
        figures = figures_of(name, result)
        if figures is not None:
            total += core.failed(figures) if name == "core" else figures["failed"]
    return total


def report(loop: str, result: dict, console: Console) -> None:
    """Print one loop's figures: each measured section's tables, then every goal."""
    for name, section in SECTIONS.items():
        figures = figures_of(name, result)
        if figures is not None:
            section.report(loop, figures, console)
    for g in result["goals"]:
        verdict = "[green]PASS[/green]" if g["pass"] else "[red]MISS[/red]"
        console.print(f"{verdict} {g['goal']}: {g['value']:.3f}{g['unit']} (margin {g['margin']:+.3f}{g['unit']})",
                      highlight=False)


def parse_sections(only: str) -> tuple[str, ...] | None:
    wanted = {s.strip() for s in only.split(",") if s.strip()}
    if not wanted or wanted - set(SECTIONS):
        return None
    return tuple(s for s in SECTIONS if s in wanted)


def main(*, json_out: bool, quick: bool, loop: str, only: str = ",".join(DEFAULT), check: bool = False) -> int:
    """Run the bench; exit code 0, or 1 when an ask failed (or, with ``check``, a goal was missed)."""
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
    plans = {name: SECTIONS[name].QUICK if quick else SECTIONS[name].FULL for name in sections}
    described = {name: SECTIONS[name].describe(plan) for name, plan in plans.items()}
    described = {name: d for name, d in described.items() if d is not None}
    out = {"sections": list(sections), "plan": described,
           "client": "Client.send with a prepared Ask (both two-hop paths)",
           "python": sys.version.split()[0], "cpus": os.cpu_count(), "loops": {}}
    try:
        with NatsServer() as server:
            err.print(f"nats-server at {server.url}; sections {', '.join(sections)}; loops {', '.join(loops)}"
                      + (" (--quick: a smoke run)" if quick else ""), highlight=False)
            progress = Progress(len(loops) * len(plans))
            for name in loops:
                options = {"use_uvloop": True} if name == "uvloop" else {}
                out["loops"][name] = anyio.run(run_loop, server.url, name, plans, progress,
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
    missed = [g for r in out["loops"].values() for g in r["goals"] if not g["pass"]]
    if check and missed:
        err.print(f"[red]{len(missed)} goals missed[/red] (--check)")
    return 1 if failed or (check and missed) else 0
