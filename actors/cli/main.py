"""``llmbus``: run the stack, run one actor, ask, demo, bench — one module per command group.

Exit codes: 0 success; 1 the ask or request failed (a typed Failure, printed as ``kind: message``,
or no fleet reachable); 2 bad usage or configuration (an option out of range, an invalid config
file, an unknown actor name, a request the fleet refused as ``bad_request``).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from actors.cli import ask, bench, cache, cost, ensembles, evaluate, fleet, health, routing, run, strategy, trace
from actors.cli import cluster, patterns
from actors.cli import alerts, images
from actors.cli import keys
from actors.cli.common import (AUTH_FLAGS, ConfigOpt, CredsOpt, NatsUserOpt, NkeyOpt, Options, PasswordEnvOpt, TlsCaOpt,
                               TlsCertOpt, TlsKeyOpt, TokenEnvOpt, UrlOpt, VerboseOpt, auth_first, group)

app = group(add_completion=False, no_args_is_help=True, help="llmbus: multi-LLM orchestration over NATS")


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"llmbus {version('llmbus')}")
        except PackageNotFoundError:
            typer.echo("llmbus (not installed)")
        raise typer.Exit()


@app.callback()
def shared(
    ctx: typer.Context,
    config: ConfigOpt = None,
    nats_url: UrlOpt = None,
    verbose: VerboseOpt = False,
    creds: CredsOpt = None,
    nkey: NkeyOpt = None,
    token_env: TokenEnvOpt = None,
    nats_user: NatsUserOpt = None,
    password_env: PasswordEnvOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False,
) -> None:
    """The options of every command, before its name: ``llmbus --config x.toml ask "hi"``."""
    given = (creds, nkey, token_env, nats_user, password_env, tls_ca, tls_cert, tls_key)  # AUTH_FLAGS' order
    auth = tuple((key, value) for (key, _), value in zip(AUTH_FLAGS.values(), given) if value is not None)
    ctx.obj = Options(config=config, nats_url=nats_url, verbose=verbose, auth=auth)


# One module per command group, each with its own ``app``, listed in the order of ``llmbus --help``.
# A new group is a module and one more entry here.
COMMANDS = [run, ask, strategy, fleet, health, cost, cache, bench, routing, ensembles, trace, patterns, evaluate,
            images, alerts, cluster, keys]
for command_group in COMMANDS:
    app.add_typer(command_group.app)


def main() -> None:
    sys.argv[1:] = auth_first(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
