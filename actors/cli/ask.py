"""``llmbus ask`` (one ask through the router) and ``llmbus test`` (one request to one provider actor).

The answer goes to stdout exactly as the model wrote it (a newline added only when it has none at
its end); the route and any diagnostics go to stderr. Exit 0 on an answer, 1 on a Failure, 2 on bad
usage (an option out of range, a file that cannot be read, or an ask the fleet refused as bad).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import anyio
import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, err, exit_code, group, load_settings, on_fleet, out,
                               print_failure, print_json, write_out)
from bus import messages as m
from bus.errors import LlmError

app = group()

PromptArg = Annotated[Optional[str], typer.Argument(
    help="the question; - reads it from stdin (omit it with --messages)", show_default=False)]
FileOpt = Annotated[Optional[list[Path]], typer.Option(
    "--file", "-f", help="attach a file as a document part (repeatable)", exists=True, dir_okay=False)]


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=what) from None


def _json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(_read(path, what))
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}", param_hint=what) from None


def attachment(path: Path) -> m.Document | m.Image:
    """A file as a message part: text files as text, images as images, anything else as base64."""
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = path.read_bytes()
    if media_type.startswith("image/"):
        return m.Image(data=base64.b64encode(data).decode(), media_type=media_type)
    try:
        return m.Document(text=data.decode(), media_type=media_type if "/" in media_type else "text/plain", name=path.name)
    except UnicodeDecodeError:
        return m.Document(data=base64.b64encode(data).decode(), media_type=media_type, name=path.name)


def build_messages(prompt: str | None, *, system: str | None, system_file: Path | None,
                   files: list[Path], messages_file: Path | None) -> list[m.Message]:
    """The conversation of one ``llmbus ask``, from its arguments (``typer.BadParameter`` when it is empty)."""
    msgs: list[m.Message] = []
    if messages_file is not None:
        try:
            msgs = msgspec.convert(_json_file(messages_file, "--messages"), list[m.Message])
        except msgspec.ValidationError as exc:
            raise typer.BadParameter(f"{messages_file}: not a list of messages ({exc})", param_hint="--messages") from None
    if prompt == "-":
        prompt = sys.stdin.read()
    if prompt is not None and not prompt.strip():
        raise typer.BadParameter("the prompt is empty", param_hint="PROMPT")
    if prompt is not None or files:
        parts: list[m.Part] = [attachment(f) for f in files]
        if prompt is not None:
            parts.append(m.Text(text=prompt))
        msgs.append(m.Message(role="user", content=prompt if not files else parts))
    if not msgs:
        raise typer.BadParameter("give a prompt (or - for stdin), --file or --messages", param_hint="PROMPT")
    if system_file is not None:
        system = _read(system_file, "--system-file")
    if system:
        msgs.insert(0, m.Message(role="system", content=system))
    return msgs


def with_pattern(name: str, settings, messages: list[m.Message], strategy: str | None, schema: Any):
    """The ask's messages, schema and strategy options under analysis pattern ``name`` (actors/patterns.py)."""
    from actors.patterns import PatternError, apply, patterns

    try:
        known = patterns(settings.patterns_dir)
        if name not in known:
            raise PatternError(f"no pattern {name!r}; known: {', '.join(sorted(known))}")
        return apply(known[name], messages, strategy=strategy or settings.router.strategy, schema=schema)
    except PatternError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pattern") from None


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be above 0 (got {value:g})")
    return value


@app.command()
def ask(
    ctx: typer.Context,
    prompt: PromptArg = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="see `llmbus strategies`")] = None,
    provider: Annotated[Optional[list[str]], typer.Option("--provider", "-p", help="provider(s), in order (repeatable)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="a model hint for the provider")] = None,
    budget_ms: Annotated[int, typer.Option("--budget-ms", "-b", min=1, help="time budget for the whole ask, ms")] = 30_000,
    system: Annotated[Optional[str], typer.Option(help="a system prompt")] = None,
    system_file: Annotated[Optional[Path], typer.Option("--system-file", exists=True, dir_okay=False, help="the system prompt from a file")] = None,
    files: FileOpt = None,
    messages_file: Annotated[Optional[Path], typer.Option("--messages", exists=True, dir_okay=False, help="a whole conversation: a JSON list of {role, content}")] = None,
    schema_file: Annotated[Optional[Path], typer.Option("--schema", exists=True, dir_okay=False, help="a JSON Schema file: ask for structured output (printed as JSON)")] = None,
    temperature: Annotated[Optional[float], typer.Option(min=0.0, max=2.0)] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1)] = None,
    stream: Annotated[bool, typer.Option("--stream", help="show the workers and the answer live on stderr as it is written (the final text on stdout)")] = False,
    retries: Annotated[int, typer.Option(min=0, help="resend the same ask id on no-responders / retryable failures")] = 0,
    user: Annotated[Optional[str], typer.Option(help="who asks (budgets, cost reports)")] = None,
    tier: Annotated[Optional[str], typer.Option(help="free | pro | premium … (budgets, cost reports)")] = None,
    preset: Annotated[Optional[str], typer.Option(help="fast | cheap | balanced | reliable (config/presets/)")] = None,
    priority: Annotated[Optional[int], typer.Option(help="served before lower ones when a router is full (default: the tier's)")] = None,
    pattern: Annotated[Optional[str], typer.Option(help="an analysis pattern: summarize, critique, compare … (`llmbus patterns`)")] = None,
    template: Annotated[Optional[str], typer.Option(help="render the answer: markdown | plain | table, or a Jinja2 file (sandboxed)")] = None,
    synthesizer: Annotated[Optional[str], typer.Option(help="the provider that merges (synthesis; map_reduce's reducer)")] = None,
    max_cost_usd: Annotated[Optional[float], typer.Option("--max-cost-usd", callback=_positive, help="a ceiling for this ask, USD (above 0)")] = None,
    cache: Annotated[Literal["use", "refresh", "skip"], typer.Option(help="the answer cache")] = "use",
    namespace: Annotated[Optional[str], typer.Option(help="the cache namespace (it sets the TTL)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Publish one ask and print the answer. With nothing running (and no URL given), runs it on a
    private stack and says so on stderr."""
    messages = build_messages(prompt, system=system, system_file=system_file, files=files or [],
                              messages_file=messages_file)
    schema = _json_file(schema_file, "--schema") if schema_file is not None else None
    settings = load_settings(ctx, config, nats_url)
    strategy_options = None
    if template is not None:  # a template that does not exist is bad usage before the ask, not after
        from actors.templates import TemplateError, source_of

        try:
            source_of(template)
        except TemplateError as exc:
            raise typer.BadParameter(str(exc), param_hint="--template") from None
    if pattern is not None:
        messages, schema, strategy_options = with_pattern(pattern, settings, messages, strategy, schema)
    if synthesizer is not None:
        merge_key = {"synthesis": "synthesizer", "map_reduce": "reducer"}.get(strategy or settings.router.strategy)
        if merge_key is None:
            raise typer.BadParameter("only with --strategy synthesis or map_reduce", param_hint="--synthesizer")
        strategy_options = {**(strategy_options or {}), merge_key: synthesizer}
    params = m.Params(temperature=temperature, max_tokens=max_tokens, model=model)
    fields = dict(strategy=strategy, providers=provider or None, budget_ms=budget_ms, retries=retries, user=user,
                  tier=tier, max_cost_usd=max_cost_usd, cache=cache, cache_namespace=namespace, schema=schema,
                  params=params, priority=priority, **({"labels": {"preset": preset}} if preset else {}),
                  **({"strategy_options": strategy_options} if strategy_options else {}))
    async def send(client):
        try:
            if not stream:
                return await client.ask(messages, **fields)
            from actors.cli.live import StreamView

            final = None  # progress on stderr (live on a terminal); the final text on stdout, once
            with StreamView(err, quiet=json_out) as view:
                async for item in client.stream(messages, **fields):
                    view.feed(item)
                    if not isinstance(item, m.Chunk):
                        final = item
            return final
        except LlmError as exc:
            return exc.failure

    reply = on_fleet(settings, send, json_out=json_out, private=True)
    if json_out:
        print_json(reply)
    elif isinstance(reply, m.Answer):
        if template is not None:
            from actors.templates import TemplateError, render

            try:
                write_out(render(reply, template).rstrip("\n"))
            except TemplateError as exc:
                err.print(f"[red]{escape(str(exc))}[/red]")
                raise typer.Exit(2) from None
        elif schema is not None and reply.data is not None:
            write_out(msgspec.json.encode(reply.data).decode())
        else:
            write_out(reply.text)
        if isinstance(reply.metadata.get("consensus"), dict):
            err.print(consensus_table(reply.metadata["consensus"]))
        err.print(route_line(reply), markup=False)
    if isinstance(reply, m.Failure):
        if not json_out:
            print_failure(reply, hint_for(reply, settings))
            if reply.route:
                err.print(route_line(reply), markup=False)
        raise typer.Exit(exit_code(reply))


def consensus_table(report: dict) -> Table:
    """A consensus answer's fields (``metadata.consensus``): value, confidence, support, dissent."""
    table = Table(title="consensus — per field")
    for col in ("field", "value", "confidence", "support", "dissent / reason"):
        table.add_column(col, justify="right" if col == "confidence" else "left")
    for name, f in report.items():
        if not isinstance(f, dict):
            continue
        dissent = "; ".join(f"{d.get('provider')}: {d.get('value')}" for d in f.get("dissent") or [])
        why = f.get("reason") or ""
        table.add_row(escape(name), escape("—" if f.get("value") is None else str(f["value"])),
                      f"{f.get('confidence', 0.0):.2f}", escape(", ".join(f.get("support") or []) or "—"),
                      escape("; ".join(x for x in (dissent, why) if x) or "—"))
    return table


def route_line(reply: m.Answer | m.Failure) -> str:
    line = "route: " + " → ".join(f"{s.provider} {s.outcome} {s.ms:.1f}ms" for s in reply.route)
    if isinstance(reply, m.Answer) and reply.model:
        line += f" · model {reply.model}"
    return line


def hint_for(failure: m.Failure, settings) -> str:
    """What to try, for a Failure that says too little by itself."""
    gone = [s.provider for s in failure.route if "no responders" in (s.detail or "")]
    if "no responders" in failure.message or gone:
        names = ", ".join(gone) or "it"
        return (f"no actor serves {names}: start it where the providers' keys are set "
                "(`llmbus actor provider.<name>`, or `llmbus up` there); `llmbus providers` lists what runs")
    return ""


@app.command("test")
def test_provider(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="the provider name, as in [providers.<name>]")],
    budget_ms: Annotated[int, typer.Option("--budget-ms", "-b", min=1)] = 30_000,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send one small request through the bus to one provider actor; print what it answered."""
    settings = load_settings(ctx, config, nats_url)
    from bus.deadline import deadline_in
    from bus.rpc import new_id
    from bus.subjects import PROVIDER_COMPLETE

    async def call(client):
        request = m.Complete(
            id=new_id(), ask_id=new_id(), params=m.Params(max_tokens=16),
            messages=[m.Message(role="user", content="Reply with the single word: pong")],
        )
        started = anyio.current_time()
        reply = await client.rpc.service(
            PROVIDER_COMPLETE, request, name=provider,
            deadline=deadline_in(budget_ms), ask_id=request.ask_id, call_id=request.id,
        )
        return reply, (anyio.current_time() - started) * 1000.0

    reply, ms = on_fleet(settings, call, json_out=json_out)
    if json_out:
        print_json(reply)
    elif isinstance(reply, m.Completion):
        table = Table(title=f"llmbus test {escape(provider)}", show_header=False)
        for key, value in [("model", reply.model), ("answer", reply.text[:80]), ("round trip", f"{ms:.1f} ms"),
                           ("provider latency", f"{reply.latency_ms:.1f} ms"), ("input tokens", str(reply.usage.input_tokens)),
                           ("output tokens", str(reply.usage.output_tokens)), ("cached tokens", str(reply.usage.cached_tokens)),
                           ("finish reason", reply.finish_reason)]:
            table.add_row(key, escape(value))
        out.print(table)
    if isinstance(reply, m.Failure):
        if not json_out:
            hint = ""
            if reply.kind == m.UNAVAILABLE and "no responders" in reply.message:
                known = f" (this config names {', '.join(settings.providers)})" if provider not in settings.providers else ""
                hint = (f"no provider.{provider} actor runs on this fleet{known}; a real provider's actor starts "
                        "only where its API key is set: `llmbus providers` lists what runs")
            print_failure(reply, hint)
        raise typer.Exit(exit_code(reply))
