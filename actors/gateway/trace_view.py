"""``GET /dashboard/trace/{ask_id}``: an ask's trace from the recording, as ``llmbus trace`` prints
it (``actors.cli.trace.render``, exported to HTML by rich with its colours), or its JSON
(``?format=json``: ``Trace.as_json``). When the recording does not hold the ask (recording off, or
aged out), what the dashboard saw of it instead — its failure and route — if it is a recent failure,
else 404; 504 when reading the recording takes over ``TRACE_BUDGET_S``."""

from __future__ import annotations

import io
from html import escape
from urllib.parse import quote

import anyio
import msgspec
from starlette.responses import HTMLResponse, JSONResponse, Response

from bus.subjects import Subjects

TRACE_BUDGET_S = 5.0


async def trace_response(nc, subjects: Subjects, ask_id: str, *, as_json: bool, seen: dict | None = None,
                         key: str | None = None) -> Response:
    """``key``: the ``?key=`` the page was opened with, kept in its links (a browser sends no header)."""
    from actors import recording

    if not ask_id or len(ask_id) > 200 or not ask_id.isprintable():
        return JSONResponse({"error": {"message": "not an ask id", "type": "invalid_request_error"}}, 400)
    with anyio.move_on_after(TRACE_BUDGET_S):
        tr = await recording.trace(nc, subjects, ask_id)
        if not tr.calls and not tr.events:
            msg = (f"no recording of ask {ask_id} under root {subjects.root} "
                   "(is [record] sampling \"all\" or \"errors\"? has it aged out?)")
            if seen is not None:
                if as_json:
                    return JSONResponse({"ask_id": ask_id, "recorded": False, "note": msg, "seen": seen})
                return HTMLResponse(_page(ask_id, _seen_html(seen, msg), key))
            if as_json:
                return JSONResponse({"error": {"message": msg, "type": "not_found"}}, 404)
            return HTMLResponse(_page(ask_id, f"<p>{escape(msg)}</p>", key), 404)
        if as_json:
            return Response(msgspec.json.encode(tr.as_json()), media_type="application/json")
        return HTMLResponse(_page(ask_id, _tree_html(tr), key))
    msg = f"reading the recording took over {TRACE_BUDGET_S:.0f} s"
    return JSONResponse({"error": {"message": msg, "type": "timeout"}}, 504)


def _tree_html(tr) -> str:
    """The tree ``llmbus trace`` prints, as HTML (rich's own export, colours kept)."""
    from rich.console import Console

    from actors.trace_tree import render

    console = Console(record=True, width=140, file=io.StringIO(), color_system="truecolor")
    console.print(render(tr))
    return console.export_html(inline_styles=True, code_format="<pre class=\"trace\">{code}</pre>")


def _seen_html(seen: dict, note: str) -> str:
    """A failed ask as the dashboard saw it: its failure, then each step of its route."""
    rows = "".join(f"<tr><td>{escape(st['provider'])}</td><td class=\"{'ok' if st['outcome'] == 'ok' else 'bad'}\">"
                   f"{escape(st['outcome'])}</td><td class=\"num\">{st['ms']:.1f} ms</td><td>{escape(st['detail'])}</td></tr>"
                   for st in seen["route"])
    route = (f"<table><thead><tr><th>provider</th><th>outcome</th><th class=\"num\">took</th><th>detail</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>") if rows else "<p>no step: it failed before any call</p>"
    return (f"<p class=\"note\">{escape(note)}: what the dashboard saw of it instead.</p>"
            f"<p><b class=\"bad\">{escape(seen['kind'])}</b> · strategy {escape(seen['strategy'])}"
            f"{' · provider ' + escape(seen['provider']) if seen.get('provider') else ''}</p>"
            f"<pre class=\"trace\">{escape(seen['message'])}</pre>{route}")


def _page(ask_id: str, body: str, key: str | None = None) -> str:
    keyq = "key=" + quote(key, safe="") if key else ""
    back, as_json = "/" + ("?" + keyq if keyq else ""), "?format=json" + ("&" + keyq if keyq else "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>trace {escape(ask_id)}</title>
<link rel="stylesheet" href="/dashboard/static/trace.css"></head><body>
<header><a href="{escape(back)}">← dashboard</a><h1>ask <code>{escape(ask_id)}</code></h1>
<a href="{escape(as_json)}">JSON</a></header><main>{body}</main></body></html>"""
