"""The Python client: keyword arguments, the default URL, streaming router asks, the sync helper."""

from __future__ import annotations

import asyncio
import inspect

import anyio
import pytest

from bus import messages as m
from bus.client import Client, ask_sync

MOCKS = """
[router]
strategy = "failover"
providers = ["a", "b"]

[providers.a]
latency = { dist = "fixed", ms = 1 }

[providers.b]
latency = { dist = "fixed", ms = 1 }
"""


async def collect(client: Client, prompt: str, **kw) -> list:
    with anyio.fail_after(10):
        return [item async for item in client.stream(prompt, budget_ms=5000, **kw)]


@pytest.mark.anyio
async def test_stream_passes_the_providers_chunks_then_the_answer(stack):
    async with stack(MOCKS) as s:
        *chunks, final = await collect(s.client, "one two three four five")
        assert len(chunks) > 1 and all(isinstance(c, m.Chunk) for c in chunks)
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert isinstance(final, m.Answer) and final.strategy == "failover"
        assert "".join(c.delta for c in chunks) == final.text == "[a] one two three four five"
        assert {c.id for c in chunks} == {final.id}


@pytest.mark.anyio
async def test_a_broken_stream_fails_over_with_a_restart_chunk(stack):
    async with stack(MOCKS + "failures = { cut_stream = 1.0 }\n") as s:  # b's streams always break
        items = await collect(s.client, "one two three four five six", providers=["b", "a"])
        final = items[-1]
        assert isinstance(final, m.Answer), final
        assert [(st.provider, st.outcome) for st in final.route] == [("b", "unavailable"), ("a", "ok")]
        restart = [i for i, c in enumerate(items) if isinstance(c, m.Chunk) and c.stage == "restart"]
        assert len(restart) == 1 and restart[0] > 0 and items[restart[0]].reset  # b's chunks came first
        assert "".join(c.delta for c in items[restart[0] + 1:-1]) == final.text == "[a] one two three four five six"


@pytest.mark.anyio
async def test_stream_with_single_and_a_failure_ends_in_the_failure(stack):
    async with stack(MOCKS) as s:
        *_, final = await collect(s.client, "x", strategy="single", providers=["nosuch"])
        assert isinstance(final, m.Failure) and final.kind == m.BAD_REQUEST


def test_ask_has_real_keyword_arguments_with_docstrings():
    params = inspect.signature(Client.ask).parameters
    for name in ("strategy", "providers", "schema", "tools", "tier", "user", "params", "cache", "budget_ms",
                 "labels", "max_cost_usd", "strategy_options"):
        assert name in params, name
        assert name in Client.ask.__doc__
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert Client.__doc__ and Client.stream.__doc__


def test_client_reads_llmbus_nats_url(monkeypatch):
    monkeypatch.setenv("LLMBUS_NATS_URL", "nats://10.1.2.3:4999")
    assert Client().url == "nats://10.1.2.3:4999"
    assert Client("nats://h:1").url == "nats://h:1"


@pytest.mark.anyio
async def test_ask_sync_works_inside_a_running_loop(stack, nats_url, root):
    async with stack(MOCKS):
        answer = await anyio.to_thread.run_sync(lambda: ask_sync("hi", url=nats_url, root=root, budget_ms=5000))
        assert answer.text == "[a] hi"

        async def in_a_cell():  # a notebook: a loop already runs in this thread (not the actors' loop)
            return ask_sync("hey", url=nats_url, root=root, budget_ms=5000)

        answer = await anyio.to_thread.run_sync(lambda: asyncio.run(in_a_cell()))
        assert answer.text == "[a] hey"
