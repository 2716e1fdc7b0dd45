"""``llmbus bench``: the benchmark (it starts what it measures itself)."""

from __future__ import annotations

from typing import Annotated

import typer

from actors.cli.common import JsonOpt, options

app = typer.Typer()


@app.command()
def bench(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    quick: Annotated[bool, typer.Option(help="fewer samples (a smoke run)")] = False,
    loop: Annotated[str, typer.Option(help="asyncio | uvloop | both")] = "both",
    only: Annotated[str, typer.Option(help="sections to run, a comma list: core, health, adapters, cache, cost")] = "core,health,adapters,cache,cost",
) -> None:
    """Measure llmbus against a bare nats-py path, the breaker check and SDK adapters; print ratios."""
    options(ctx).log()
    from actors.bench.main import main as bench_main

    raise typer.Exit(bench_main(json_out=json_out, quick=quick, loop=loop, only=only))
