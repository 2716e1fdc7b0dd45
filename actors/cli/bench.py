"""``llmbus bench``: the benchmark (it starts what it measures itself)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Optional

import typer

from actors.cli.common import JsonOpt, group, options

app = group()


@app.command()
def bench(
    ctx: typer.Context,
    sections: Annotated[Optional[str], typer.Argument(
        help="sections to run, as --only (`llmbus bench chaos` is `llmbus bench --only chaos`)")] = None,
    json_out: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="fewer samples and one loop (a smoke run)")] = False,
    loop: Annotated[Optional[Literal["asyncio", "uvloop", "both"]], typer.Option(
        help="event loop(s) to measure on (default: both; asyncio with --quick)")] = None,
    only: Annotated[Optional[str], typer.Option(help="sections to run, a comma list: core, health, adapters, cache, "
                                                     "cost (the default); routing, chaos, ensembles only when named")] = None,
    check: Annotated[bool, typer.Option("--check", help="exit 1 when a goal is missed (for CI)")] = False,
    cluster: Annotated[bool, typer.Option("--cluster", help="`llmbus bench chaos --cluster`: the chaos scenarios on "
                                                            "three clustered nats-servers (the cluster section)")] = False,
) -> None:
    """Measure llmbus against a bare nats-py path, the breaker check and SDK adapters; print ratios.
    Progress (percentage, elapsed, time left) on stderr; the figures and the plan with --json."""
    options(ctx).log(logging.ERROR)  # a warning in the middle of the progress helps nobody
    from actors.bench.main import main as bench_main

    if sections and only and sections != only:
        raise typer.BadParameter(f"sections {sections!r} and --only {only!r} disagree: give one")
    chosen = loop or ("asyncio" if quick else "both")
    only = sections or only or "core,health,adapters,cache,cost"
    if cluster:  # chaos --cluster is the cluster section (alone, or in place of chaos)
        only = ",".join(dict.fromkeys("cluster" if s.strip() == "chaos" else s.strip()
                                      for s in (only.split(",") if sections or only != "core,health,adapters,cache,cost"
                                                else ["cluster"])))
    raise typer.Exit(bench_main(json_out=json_out, quick=quick, loop=chosen, only=only, check=check))
