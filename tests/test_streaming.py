"""Streamed replies over the bus (``Rpc.stream`` ↔ a streaming endpoint) and the mock's faults."""

from __future__ import annotations

import anyio
import pytest

from bus import messages as m
from bus.deadline import deadline_in, now
from bus.errors import AllFailed, InvalidOutput
from bus.rpc import new_id
from tests.helpers import wait_until

MOCKS = """
[router]
strategy = "failover"
providers = ["a", "b"]

[providers.a]
latency = { dist = "fixed", ms = 1 }

[providers.b]
latency = { dist = "fixed", ms = 1 }
"""


def complete(text: str, **fields) -> m.Complete:
    return m.Complete(id=new_id(), ask_id=new_id(), messages=[m.Message(role="user", content=text)], **fields)


async def collect(s, provider: str, request: m.Complete, budget_ms: int = 3000) -> list:
    subject = s.client.subjects.provider_stream(provider)
    return [
        item
        async for item in s.client.rpc.stream(
            subject, request, deadline=deadline_in(budget_ms), ask_id=request.ask_id, call_id=request.id
        )
    ]


@pytest.mark.anyio
async def test_stream_yields_chunks_then_one_completion(stack):
    async with stack(MOCKS) as s:
        items = await collect(s, "a", complete("one two three four five"))
        *chunks, final = items
        assert chunks and all(isinstance(c, m.Chunk) for c in chunks)
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert isinstance(final, m.Completion)
        assert "".join(c.delta for c in chunks) == final.text == "[a] one two three four five"
        assert final.usage.output_tokens > 0


@pytest.mark.anyio
async def test_a_cut_stream_ends_in_a_failure_never_an_answer(stack):
    async with stack(MOCKS) as s:
        items = await collect(s, "a", complete("one two three four five six", labels={"mock.fault": "cut_stream"}))
        *chunks, final = items
        assert chunks and all(isinstance(c, m.Chunk) for c in chunks)
        assert isinstance(final, m.Failure) and final.kind == m.UNAVAILABLE
        assert not any(isinstance(i, m.Completion) for i in items)


@pytest.mark.anyio
async def test_a_stalled_stream_times_out_at_the_deadline(stack):
    async with stack(MOCKS) as s:
        provider = s.actor("provider.a")
        started = now()
        items = await collect(s, "a", complete("x", labels={"mock.fault": "stall"}), budget_ms=300)
        took = now() - started
        assert [type(i) for i in items] == [m.Failure] and items[0].kind == m.TIMEOUT
        assert 0.25 <= took < 1.0, took
        # the provider had the stream and its own deadline ended it (not only the caller's timer)
        await wait_until(lambda: provider.in_flight() == 0, within_s=1.0, what="producer stopped")
        stream = provider.statistics().endpoints["stream"]
        assert stream.num_requests == 1
        assert stream.last_error.startswith(f"{m.TIMEOUT}: "), stream


@pytest.mark.anyio
async def test_a_consumer_that_leaves_stops_the_producer(stack):
    async with stack(MOCKS) as s:
        provider = s.actor("provider.a")
        request = complete("x", labels={"mock.fault": "stall"})
        stream = s.client.rpc.stream(
            s.client.subjects.provider_stream("a"), request,
            deadline=deadline_in(10_000), ask_id=request.ask_id, call_id=request.id,
        )

        async def consume():
            async for _ in stream:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await wait_until(lambda: provider.in_flight(request.ask_id) == 1, what="the producer has the request")
            tg.cancel_scope.cancel()  # the consumer leaves mid-stream
        await stream.aclose()  # leaving early publishes a Cancel
        await wait_until(lambda: provider.in_flight() == 0, within_s=2.0, what="producer stopped")
        produced = provider.statistics().endpoints["stream"]
        assert produced.num_requests == 1
        assert produced.last_error == f"{m.CANCELLED}: stream consumer left", produced  # the Cancel, not the deadline


@pytest.mark.anyio
async def test_no_responders_on_a_stream(stack):
    async with stack(MOCKS, names=["router"]) as s:
        items = await collect(s, "a", complete("x"))
        assert [(type(i), i.kind) for i in items] == [(m.Failure, m.UNAVAILABLE)]


@pytest.mark.anyio
async def test_fault_labels_drive_the_mock_through_the_router(stack):
    async with stack(MOCKS) as s:
        with pytest.raises(AllFailed) as info:
            await s.client.ask("x", labels={"mock.fault": "overloaded"}, budget_ms=3000)
        assert [(st.provider, st.outcome) for st in info.value.failure.route] == [("a", "overloaded"), ("b", "overloaded")]
        with pytest.raises(InvalidOutput):
            await s.client.ask("x", schema={"type": "object"}, labels={"mock.fault": "malformed_output"},
                               strategy="single", budget_ms=3000)
        empty = await s.client.ask("x", labels={"mock.fault": "empty"}, budget_ms=3000)
        assert empty.text == ""
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        structured = await s.client.ask("capital of Norway", schema=schema, budget_ms=3000)
        assert structured.data == {"answer": "capital of Norway"}  # an example of the schema, strings the prompt
