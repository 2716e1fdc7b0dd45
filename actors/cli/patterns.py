"""``llmbus patterns``: the analysis patterns this install knows (config/patterns/ and patterns_dir)."""

from __future__ import annotations

import msgspec
import typer
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, group, load_settings, out, print_json

app = group()


@app.command("patterns")
def list_patterns(ctx: typer.Context, json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List the analysis patterns (`llmbus ask --pattern NAME`), with what each one does."""
    from actors.patterns import PatternError, patterns

    settings = load_settings(ctx, config, None)
    try:
        known = patterns(settings.patterns_dir)
    except PatternError as exc:
        raise typer.BadParameter(str(exc)) from None
    if json_out:
        print_json({name: {"description": p.description, "schema": p.schema_dict() is not None,
                           "min_documents": p.min_documents, "path": p.path} for name, p in known.items()})
        return
    table = Table(title="analysis patterns")
    for col in ("name", "description", "schema", "file"):
        table.add_column(col)
    for name, p in known.items():
        table.add_row(name, p.description, "yes" if p.schema else "", p.path)
    out.print(table)
