"""The ``adapters`` section of ``llmbus bench``: an SDK call, raw vs through the llmbus provider actor.

Per SDK kind (openai, anthropic, gemini), against one zero-latency ``WireServer`` (``actors.fakes``,
answering with ``auto_reply``) in this process: (i) ``raw SDK``: the SDK's own async client
(retries off) called directly, the same model, message and max tokens; (ii) ``llmbus``: a
``Complete`` sent with ``rpc.call`` to ``provider_complete(<kind>)``, served by the llmbus provider
actor of that kind (``base_url`` = the WireServer, key from a dummy variable set in this process):
Complete in → adapter → SDK call → Completion out, its Outcome/Usage events published as in
production. So the llmbus figure includes one bus hop; the bare one-hop nats figure
(``actors.bench.bare``) is measured beside it (same turns) for context. Sequential only (the
WireServer and the SDKs share this loop).

Every role runs in this process, on the bench's event loop, under the root ``bench-adapters``,
whose JetStream streams are deleted when done. Cost accounting (``[cost]``) is off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
from rich.console import Console
from rich.table import Table

from bus import codec
from bus import messages as m
from bus.client import Client
from bus.deadline import deadline_in
from bus.rpc import new_id
from actors.bench.bare import bare_role, one_hop
from actors.bench.measure import (
    BUDGET_MS, PROMPT, Plan, Progress, Send, drop_jetstream, failed_asks, label, measure,
)
from actors.fakes.auto import auto_reply
from actors.fakes.server import WireServer
from actors.runtime import run_actors
from actors.settings import BusSettings, CostSettings, ProviderSettings, Settings
from actors.stack import build_actors

ADAPTERS_ROOT = "bench-adapters"
KEY_ENV, DUMMY_KEY = "LLMBUS_BENCH_DUMMY_KEY", "sk-bench-not-a-real-key"
MAX_TOKENS = 64
KINDS = {  # kind: (model, what the SDK's base_url adds to the WireServer's URL)
    "openai": ("gpt-4o-mini", "/v1"),
    "anthropic": ("claude-haiku-4-5", ""),
    "gemini": ("gemini-2.5-flash", ""),
}
FULL = Plan(warmup=100, samples=1000, concurrency=())  # sequential only
QUICK = Plan(warmup=5, samples=50, concurrency=())


def raw_sdk(kind: str, url: str) -> tuple[Send, Callable]:
    """(send, aclose): the SDK's async client called directly, as a program without llmbus would."""
    model, suffix = KINDS[kind]
    text = PROMPT[0].text()
    if kind == "openai":
        from openai import AsyncOpenAI

        client = AsyncOpenAI(api_key=DUMMY_KEY, base_url=url + suffix, max_retries=0)

        async def send() -> bool:
            r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                     max_completion_tokens=MAX_TOKENS)
            return bool(r.choices[0].message.content)

        return send, client.close
    if kind == "anthropic":
        from anthropic import AsyncAnthropic

        client = AsyncAnthropic(api_key=DUMMY_KEY, base_url=url + suffix, max_retries=0)

        async def send() -> bool:
            r = await client.messages.create(model=model, messages=[{"role": "user", "content": text}],
                                             max_tokens=MAX_TOKENS)
            return bool(r.content)

        return send, client.close
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=DUMMY_KEY, http_options=types.HttpOptions(
        base_url=url + suffix, retry_options=types.HttpRetryOptions(attempts=1)))

    async def send() -> bool:
        r = await client.aio.models.generate_content(model=model, contents=[{"role": "user", "parts": [{"text": text}]}],
                                                     config={"max_output_tokens": MAX_TOKENS})
        return bool(r.text)

    return send, client.aio.aclose


def complete_send(client: Client, kind: str) -> Send:
    subject = client.subjects.provider_complete(kind)

    async def send() -> bool:
        req = m.Complete(id=new_id(), ask_id=new_id(), messages=PROMPT)
        got = await client.rpc.call(subject, req, codec.complete_reply, deadline=deadline_in(BUDGET_MS),
                                    ask_id=req.ask_id, call_id=req.id)
        return isinstance(got, m.Completion) and bool(got.text)

    return send


# --- the section interface (actors.bench.main) -------------------------------------------------


def describe(plan: Plan) -> dict:
    return {"warmup": plan.warmup, "samples": plan.samples}  # sequential only


async def run(url: str, plan: Plan, progress: Progress = lambda s: None) -> dict:
    had_key = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = DUMMY_KEY  # read by the provider actors when they are built
    try:
        async with AsyncExitStack() as stack:
            server = await stack.enter_async_context(WireServer(default=auto_reply))
            settings = Settings(
                bus=BusSettings(root=ADAPTERS_ROOT),
                providers={k: ProviderSettings(kind=k, model=model, base_url=server.url + suffix, api_key_env=KEY_ENV,
                                               max_tokens=MAX_TOKENS) for k, (model, suffix) in KINDS.items()},
                cost=CostSettings(enabled=False),
                source="actors.bench.adapters",
            ).check()
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            progress("adapters: starting the provider actors (imports the SDKs)")
            await tg.start(run_actors, build_actors(settings, [f"provider.{k}" for k in KINDS]), url)
            await tg.start(bare_role, "provider", url)
            client = await stack.enter_async_context(Client(url, root=ADAPTERS_ROOT, name="bench-client"))
            sends: dict[str, Send] = {}
            for kind in KINDS:
                send, aclose = raw_sdk(kind, server.url)
                stack.push_async_callback(aclose)
                sends[f"{kind} raw SDK"], sends[f"{kind} llmbus"] = send, complete_send(client, kind)
            sends["bare one-hop"] = await one_hop(url, stack)
            progress(f"adapters: WireServer at {server.url}; measuring {', '.join(sends)}")
            paths = await measure(sends, plan, lambda s: progress(f"adapters: {s}"))
    finally:
        if had_key is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = had_key
        await drop_jetstream(url, [ADAPTERS_ROOT])
    for p in paths.values():
        p.pop("asks_per_s")  # sequential only
    kinds = {}
    for kind in KINDS:
        raw, bus = paths[f"{kind} raw SDK"], paths[f"{kind} llmbus"]
        kinds[kind] = {"p50_ratio": round(bus["p50_ms"] / raw["p50_ms"], 3),
                       "p99_ratio": round(bus["p99_ms"] / raw["p99_ms"], 3),
                       "adds_p50_ms": round(bus["p50_ms"] - raw["p50_ms"], 4)}
        progress(f"adapters: {kind}: raw p50 {raw['p50_ms']:.3f} ms, llmbus p50 {bus['p50_ms']:.3f} ms "
                 f"({kinds[kind]['p50_ratio']:.2f}×)")
    return {"paths": paths, "kinds": kinds, "failed": failed_asks(paths)}


def goals(adapters: dict) -> list[dict]:
    return []  # figures only


def report(loop: str, adapters: dict, console: Console) -> None:
    hop = adapters["paths"]["bare one-hop"]
    table = Table(title=f"llmbus bench — adapters — {loop}",
                  caption="raw SDK: the SDK's client → WireServer (zero latency, this process); llmbus: Complete over "
                          "the bus → provider actor → the same SDK → Completion (one bus hop included); "
                          f"bare one-hop nats for context: p50 {hop['p50_ms']:.3f} ms, p99 {hop['p99_ms']:.3f} ms")
    for col in ("sdk", "metric", "raw SDK", "llmbus", "ratio", "adds"):
        table.add_column(col, justify="left" if col in ("sdk", "metric") else "right")
    for kind in KINDS:
        raw, bus = adapters["paths"][f"{kind} raw SDK"], adapters["paths"][f"{kind} llmbus"]
        for k in ("p50_ms", "p99_ms"):
            table.add_row(kind, label(k), f"{raw[k]:.3f}", f"{bus[k]:.3f}",
                          f"{bus[k] / raw[k]:.2f}×", f"{bus[k] - raw[k]:+.3f} ms")
    console.print(table)
