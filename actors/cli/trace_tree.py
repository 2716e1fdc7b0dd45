"""``llmbus trace ASK_ID``: the command's work once its options are read — without
typer (``actors.cli.quick`` runs a plain ``trace`` line without it: start-up time is a goal, issue 17)."""

from __future__ import annotations

from actors.cli.common import on_fleet, out, print_json, typer_exit
from actors.trace_tree import render
from bus.subjects import Subjects


def show_trace(settings, ask_id: str, since: float | None, json_out: bool) -> None:
    """``llmbus trace`` once its options are read (by typer, or by ``actors.cli.quick`` without it)."""
    from actors import recording

    subjects = Subjects(settings.bus.root)

    async def work(client):
        return await recording.trace(client.nc, subjects, ask_id, since_s=since)

    tr = on_fleet(settings, work, json_out=json_out, plain=True)
    if not tr.calls and not tr.events:
        out.print(f"no recording of ask {ask_id} under root {settings.bus.root} "
                  "(is [record] sampling = \"all\"? has it aged out?)", markup=False)
        raise typer_exit(1)
    if json_out:
        print_json(tr.as_json())
        return
    out.print(render(tr))
