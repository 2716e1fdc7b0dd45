"""``llmbus``: run the stack, run one actor, ask, demo, bench — one module per command group.

Exit codes: 0 success; 1 the ask failed (a typed Failure, printed as ``kind: message``);
2 bad usage or configuration (an invalid config file, an unknown actor name).
"""

from __future__ import annotations

import typer

from actors.cli import ask, bench, cache, cost, health, run, strategy
from actors.cli.common import ConfigOpt, Options, UrlOpt, VerboseOpt

app = typer.Typer(add_completion=False, no_args_is_help=True, help="llmbus: multi-LLM orchestration over NATS")


@app.callback()
def shared(ctx: typer.Context, config: ConfigOpt = None, nats_url: UrlOpt = None, verbose: VerboseOpt = False) -> None:
    """The options of every command, before its name: ``llmbus --config x.toml ask "hi"``."""
    ctx.obj = Options(config=config, nats_url=nats_url, verbose=verbose)


# One module per command group, each with its own ``app = typer.Typer()``, listed in the order of
# ``llmbus --help``. A new group is a module and one more entry here.
COMMANDS = [run, ask, strategy, health, cost, cache, bench]
for group in COMMANDS:
    app.add_typer(group.app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
