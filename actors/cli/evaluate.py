"""``llmbus eval DATASET.jsonl --strategy a --strategy b``: a labelled dataset through strategies, live
or ``--from-recordings``.

Each line: ``{"prompt": "..."}`` or ``{"messages": [...]}``, an optional ``"schema"``, and either
``"label"`` (compared with the answer's text, trimmed, case-insensitive) or ``"expected"``
(``{field: value}``, compared with the answer's structured ``data``). Per strategy: accuracy (per
field, and of the label), coverage (answered / asks), latency p50/p95, cost and calls per ask.
``config/eval_example.jsonl`` is a small dataset for the mock providers (a canned mock answering
"positive" is right on 6 of its 10 lines).

``--from-recordings``: no live asks. Each line is matched to the newest recorded ask with the same
messages (and schema) — record a live run first (``[record] sampling = "all"``, ``llmbus eval``) —
and replayed through each strategy (``actors.replay.replay_many``: one isolated router per
strategy, provider replies from the recording). Lines with no recording count against coverage
(``recorded``); calls a strategy makes that were never recorded answer ``unavailable``
(``missing_calls``), or go to the live providers with ``--live``. Latency and cost are not
reported from recordings (recorded replies are served at once; the replay router prices nothing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, group, load_settings, on_fleet, out, print_json

app = group()


def load_dataset(path: Path) -> list[dict]:
    lines = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(item, dict) or not (item.get("prompt") or item.get("messages")):
            raise typer.BadParameter(f"{path}:{n}: a line needs a prompt or messages")
        lines.append(item)
    return lines


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


def score(items: list[dict], replies: list, took_ms: list[float]) -> dict:
    from bus import messages as m

    answered = [r for r in replies if isinstance(r, m.Answer)]
    fields: dict[str, list[int]] = {}
    label_hits: list[int] = []
    for item, reply in zip(items, replies):
        ok = isinstance(reply, m.Answer)
        if "label" in item:
            label_hits.append(int(ok and reply.text.strip().lower() == str(item["label"]).strip().lower()))
        for f, want in (item.get("expected") or {}).items():
            got = reply.data.get(f) if ok and isinstance(reply.data, dict) else None
            fields.setdefault(f, []).append(int(got == want))
    costs = [r.cost_usd for r in answered if r.cost_usd is not None]
    return {
        "asks": len(items), "answered": len(answered), "coverage": round(len(answered) / max(1, len(items)), 4),
        "accuracy": {**({"label": round(sum(label_hits) / len(label_hits), 4)} if label_hits else {}),
                     **{f: round(sum(v) / len(v), 4) for f, v in fields.items()}},
        "p50_ms": _pct(took_ms, 0.5), "p95_ms": _pct(took_ms, 0.95),
        "cost_per_ask_usd": round(sum(costs) / len(answered), 8) if costs and answered else None,
        "calls_per_ask": round(sum(len(r.route) for r in answered) / len(answered), 3) if answered else None,
    }


def prompt_key(messages: list, schema: dict | None) -> str:
    """What a dataset line and a recorded Ask are matched on: their messages and schema."""
    import msgspec

    norm = [[x["role"], x["content"]] if isinstance(x, dict) else [x.role, msgspec.to_builtins(x.content)]
            for x in messages]
    return json.dumps([norm, schema], sort_keys=True, separators=(",", ":"))


def item_key(item: dict) -> str:
    messages = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
    return prompt_key(messages, item.get("schema"))


async def from_recordings(client, settings, items: list[dict], strategies: list[str | None], *,
                          since_s: float | None = None, live: bool = False, budget_ms: int = 30_000,
                          url: str | None = None) -> dict:
    """The report of ``items`` replayed from the recording through each strategy (see the module)."""
    from actors import recording
    from actors.replay import replay_many
    from bus.subjects import Subjects

    subjects = Subjects(settings.bus.root)
    records = await recording.read(client.nc, subjects.record_stream, since_s=since_s)
    newest: dict[str, recording.Trace] = {}
    for tr in recording.build_traces(subjects, records).values():  # oldest first: the newest wins
        if tr.ask is None or tr.ask.reply is None:
            continue
        try:
            ask, _ = recording.recorded_ask(tr)
        except Exception:  # noqa: BLE001 — a recording this version cannot read is no match
            continue
        newest[prompt_key(ask.messages, ask.schema)] = tr
    found = [newest.get(item_key(item)) for item in items]
    chosen = [tr for tr in found if tr is not None]
    report = {}
    for name in strategies:
        done = iter(await replay_many(client.nc, url or settings.bus.url, settings, chosen, strategy=name,
                                      budget_ms=budget_ms, live=live)) if chosen else iter(())
        runs = [next(done) if tr is not None else None for tr in found]
        r = score(items, [run.result if run is not None else None for run in runs], [])
        r.update(cost_per_ask_usd=None,  # the replay router prices nothing
                 recorded=len(chosen), missing_calls=sum(sum(run.missing.values()) for run in runs if run),
                 live_calls=sum(sum(run.live.values()) for run in runs if run))
        report[name or "as recorded"] = r
    return report


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a .jsonl file, one labelled ask a line")],
    strategy: Annotated[Optional[list[str]], typer.Option("--strategy", help="a strategy to evaluate (repeatable; "
                                                                             "default: the fleet's)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 16,
    budget_ms: Annotated[int, typer.Option("--budget-ms", min=1)] = 30_000,
    recorded: Annotated[bool, typer.Option("--from-recordings", help="replay the recorded asks of these lines "
                                                                    "instead of asking live")] = False,
    since: Annotated[Optional[float], typer.Option("--since", help="with --from-recordings: only recordings of "
                                                                   "the last this many seconds")] = None,
    live: Annotated[bool, typer.Option("--live", help="with --from-recordings: calls with no recording go to "
                                                      "the live providers")] = False,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run a labelled dataset through each strategy (live, or --from-recordings) and report accuracy
    per field, coverage, latency p50/p95, cost and calls per ask."""
    from bus import messages as m
    from bus.deadline import deadline_in

    items = load_dataset(dataset)
    settings = load_settings(ctx, config, nats_url)
    strategies = strategy or [None]

    async def replayed(client):
        return await from_recordings(client, settings, items, strategies, since_s=since, live=live,
                                     budget_ms=budget_ms)

    async def work(client):
        report = {}
        for name in strategies:
            replies: list = [None] * len(items)
            took = [0.0] * len(items)
            limit = anyio.Semaphore(concurrency)

            async def one(i: int, item: dict) -> None:
                async with limit:
                    prompt = item.get("messages") or item["prompt"]
                    if isinstance(prompt, list):
                        prompt = [m.Message(role=x["role"], content=x["content"]) for x in prompt]
                    ask = client.build(prompt, strategy=name, schema=item.get("schema"), cache="skip",
                                       budget_ms=budget_ms)
                    t0 = time.perf_counter()
                    replies[i] = await client.send(ask, deadline=deadline_in(budget_ms))
                    took[i] = (time.perf_counter() - t0) * 1000

            async with anyio.create_task_group() as tg:
                for i, item in enumerate(items):
                    tg.start_soon(one, i, item)
            report[name or "default"] = score(items, replies, took)
        return report

    report = on_fleet(settings, replayed if recorded else work, json_out=json_out)
    if json_out:
        print_json(report)
        return
    fields = sorted({f for r in report.values() for f in r["accuracy"]})
    how = " — from recordings" if recorded else ""
    table = Table(title=f"llmbus eval — {escape(dataset.name)}, {len(items)} asks{how}")
    for col in ("strategy", *(f"acc {f}" for f in fields), "coverage", "p50 ms", "p95 ms", "cost/ask", "calls/ask"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for name, r in report.items():
        table.add_row(escape(name), *(f"{r['accuracy'][f]:.0%}" if f in r["accuracy"] else "—" for f in fields),
                      f"{r['coverage']:.0%}", str(r["p50_ms"] or "—"), str(r["p95_ms"] or "—"),
                      "—" if r["cost_per_ask_usd"] is None else f"${r['cost_per_ask_usd']:.6f}",
                      str(r["calls_per_ask"]))
    out.print(table)
    for name, r in report.items() if recorded else ():
        missing = r["missing_calls"]
        out.print(f"{name}: {r['recorded']} of {len(items)} lines had a recording; {missing} calls had none"
                  + (f" ({r['live_calls']} sent live)" if live else " (answered unavailable; --live sends them)" if missing else ""),
                  markup=False)
