"""The ``llmbus`` entry point: ``llmbus trace ASK_ID`` without typer, everything else through it.

Start-up time is a goal for ``trace`` (issue 17: one ask's trace < 300 ms, process start included).
typer 0.29 coerces every parameter through a pydantic ``TypeAdapter`` (pydantic's import alone is
~130 ms here), and ``actors.cli.main`` imports every command group. So a plain ``trace`` line —
``llmbus [--config X] [--nats-url U] trace ASK_ID [--json] [--since S]``, the shared options before
or after the command — is read here and run by the same code (``actors.cli.trace_tree.show_trace``),
with the settings' cross-table checks skipped (they import every strategy; a reader of the
recording needs the bus settings only). Any other option (auth flags, ``-h``, ``-v`` …) and every
other command go to typer unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHARED = {"--config": "config", "-c": "config", "--nats-url": "nats_url"}


def parse_trace(argv: list[str]) -> dict | None:
    """The options of a plain ``trace`` command line, or None (typer reads it)."""
    got: dict = {"config": None, "nats_url": None, "since": None, "json_out": False, "ask_id": None}
    command = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in SHARED or (command and name == "--since"):
            if not eq:
                if i + 1 >= len(argv):
                    return None
                value, i = argv[i + 1], i + 1
            if name == "--since":
                try:
                    got["since"] = float(value)
                except ValueError:
                    return None
            else:
                got[SHARED[name]] = value
        elif arg == "--json" and command:
            got["json_out"] = True
        elif arg.startswith("-"):
            return None
        elif command is None:
            if arg != "trace":
                return None
            command = arg
        elif got["ask_id"] is None:
            got["ask_id"] = arg
        else:
            return None
        i += 1
    return got if command and got["ask_id"] else None


def _without_rich_tracebacks() -> None:
    """structlog imports rich's traceback module (and pygments with it, ~40 ms) for exceptions in
    its dev renderer, ``rich.pretty`` (attrs with it, ~13 ms) for the locals of exceptions in its
    dict tracebacks, and greenlet (~4 ms) for its deprecated thread-local context; a trace needs
    none of them, so structlog is loaded here with them hidden (it then formats exceptions plainly;
    they stay importable for anything else)."""
    if "structlog" in sys.modules:
        return
    hidden = [name for name in ("rich.traceback", "rich.pretty", "greenlet") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]


def main() -> None:
    got = parse_trace(sys.argv[1:])
    if got is None:
        from actors.cli.main import main as full

        full()
        return
    _without_rich_tracebacks()
    from actors.cli.common import Options
    from actors.cli.trace_tree import show_trace

    opts = Options(config=Path(got["config"]) if got["config"] else None, nats_url=got["nats_url"])
    code = 0
    try:
        opts.log()
        show_trace(opts.settings(check=False), got["ask_id"], got["since"], got["json_out"])
    except Exception as exc:
        typer = sys.modules.get("typer")  # a typer.Exit: typer was imported to raise it
        if typer is None or not isinstance(exc, typer.Exit):
            raise
        code = exc.exit_code
    # The connection is closed and the output written: skip the interpreter's teardown of every
    # module (~30 ms here), as a process exit would after it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
