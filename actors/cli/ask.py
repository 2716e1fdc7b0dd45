"""``llmbus ask`` (one ask through the router) and ``llmbus test`` (one request to one provider actor)."""

from __future__ import annotations

from typing import Annotated, Optional

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from actors.cli.common import ConfigOpt, JsonOpt, UrlOpt, err, load_settings, out, print_json, run_async, with_client
from bus import messages as m
from bus.errors import LlmError

app = typer.Typer()


@app.command()
def ask(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="the question")],
    strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="single | failover")] = None,
    provider: Annotated[Optional[list[str]], typer.Option("--provider", "-p", help="provider(s), in order")] = None,
    budget_ms: Annotated[int, typer.Option("--budget-ms", "-b", help="time budget for the whole ask")] = 30_000,
    system: Annotated[Optional[str], typer.Option(help="a system prompt")] = None,
    retries: Annotated[int, typer.Option(help="resend the same ask id on no-responders / retryable failures")] = 0,
    user: Annotated[Optional[str], typer.Option(help="who asks (budgets, cost reports)")] = None,
    tier: Annotated[Optional[str], typer.Option(help="free | pro | premium … (budgets, cost reports)")] = None,
    max_cost_usd: Annotated[Optional[float], typer.Option("--max-cost-usd", help="a ceiling for this ask")] = None,
    cache: Annotated[str, typer.Option(help="use | refresh | skip: the answer cache")] = "use",
    namespace: Annotated[Optional[str], typer.Option(help="the cache namespace (it sets the TTL)")] = None,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Publish one ask and print the answer. With nothing running, starts the embedded stack for it."""
    settings = load_settings(ctx, config, nats_url)

    async def send(client):
        try:
            return await client.ask(
                prompt, system=system, strategy=strategy, providers=provider or None,
                budget_ms=budget_ms, retries=retries, user=user, tier=tier, max_cost_usd=max_cost_usd,
                cache=cache, cache_namespace=namespace,
            )
        except LlmError as exc:
            return exc.failure

    reply = run_async(with_client, settings, send)
    if json_out:
        print_json(reply)
    elif isinstance(reply, m.Answer):
        out.print(reply.text, highlight=False, markup=False)
        err.print(_route_line(reply.route), highlight=False)
    if isinstance(reply, m.Failure):
        if not json_out:
            err.print(f"[red]{reply.kind}[/red]: {reply.message}", highlight=False)
            if reply.route:
                err.print(_route_line(reply.route), highlight=False)
        raise typer.Exit(1)


def _route_line(route: list[m.Step]) -> str:
    return "route: " + " → ".join(f"{s.provider} {s.outcome} {s.ms:.1f}ms" for s in route)


@app.command("test")
def test_provider(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="the provider name, as in [providers.<name>]")],
    budget_ms: Annotated[int, typer.Option("--budget-ms", "-b")] = 30_000,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send one small request through the bus to one provider actor; print what it answered."""
    settings = load_settings(ctx, config, nats_url)
    if provider not in settings.providers:
        err.print(f"[red]unknown provider {provider!r}[/red]; configured: {', '.join(settings.providers)}", highlight=False)
        raise typer.Exit(2)
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

    reply, ms = run_async(with_client, settings, call)
    if json_out:
        print_json(reply)
    elif isinstance(reply, m.Completion):
        table = Table(title=f"llmbus test {provider}", show_header=False)
        for key, value in [("model", reply.model), ("answer", reply.text[:80]), ("round trip", f"{ms:.1f} ms"),
                           ("provider latency", f"{reply.latency_ms:.1f} ms"), ("input tokens", str(reply.usage.input_tokens)),
                           ("output tokens", str(reply.usage.output_tokens)), ("cached tokens", str(reply.usage.cached_tokens)),
                           ("finish reason", reply.finish_reason)]:
            table.add_row(key, escape(value))
        out.print(table)
    if isinstance(reply, m.Failure):
        if not json_out:
            err.print(f"[red]{reply.kind}[/red]: {reply.message}", highlight=False)
            if reply.kind == m.UNAVAILABLE and (env := settings.providers[provider].missing_key()):
                err.print(f"provider {provider} is not configured here: set {env}", highlight=False)
        raise typer.Exit(1)
