"""Stream acknowledgements (DESIGN §5): a stream's consumer sends ``StreamAck`` every N chunks or T
seconds; a producer that hears none for two intervals stops, and the work behind it stops too.

The intervals here are short (``[bus] stream_ack_s`` for the router's own acks to providers, the
``Llm-Ack-Ms`` header or ``Client.stream_ack_s`` for a consumer of the router), and the bounds are
asserted from the moment the consumer fell silent, with room for a loaded machine above them.
"""

from __future__ import annotations

import time

import anyio
import pytest

from bus import codec
from bus import messages as m
from bus.client import Client
from bus.deadline import ACK_HEADER, ASK_ID_HEADER, BUDGET_HEADER
from bus.endpoint import UNHEARD
from bus.rpc import new_id
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

ACK_S = 0.4  # the margin of an ack against the watchdog is one interval: room for a lagging loop
SLACK_S = 1.2  # above two intervals: scheduling on a loaded 2-core machine

MOCKS = f"""
[bus]
stream_ack_s = {ACK_S}
stream_ack_chunks = 2

[router]
strategy = "failover"
providers = ["a", "b"]

[providers.a]
latency = {{ dist = "fixed", ms = 1 }}

[providers.b]
latency = {{ dist = "fixed", ms = 1 }}
"""


def ask(prompt: str = "one two three four five six", **fields) -> m.Ask:
    return m.Ask(id=new_id(), messages=[m.Message(role="user", content=prompt)], stream=True, **fields)


async def test_a_raw_consumer_that_reads_chunks_and_never_acks_stops_the_work(stack):
    """A plain NATS subscriber asks for acks (``Llm-Ack-Ms``), reads the chunks, never acks: the
    router stops within two intervals of the request, and so does the provider call behind it."""
    async with stack(MOCKS) as s:
        provider, router = s.actor("provider.a"), s.actor("router")
        request = ask(labels={"mock.fault": "stall_stream"})  # half the words, then nothing
        inbox = s.client.nc.new_inbox()
        got: list = []
        first = anyio.Event()

        async def on(msg) -> None:
            got.append(codec.stream_reply.decode(msg.data))
            first.set()

        sub = await s.client.nc.subscribe(inbox, cb=on)
        hdrs = {BUDGET_HEADER: "20000", ASK_ID_HEADER: request.id, ACK_HEADER: str(int(ACK_S * 1000))}
        sent = time.monotonic()
        await s.client.nc.publish(s.client.subjects.ask_stream, codec.encode(request), reply=inbox, headers=hdrs)
        with anyio.fail_after(5):
            await first.wait()
        assert isinstance(got[0], m.Chunk) and provider.in_flight(request.id) == 1
        await wait_until(lambda: provider.in_flight() == 0 and router.in_flight() == 0,
                         within_s=2 * ACK_S + SLACK_S, what="the router and the provider call stopped")
        took = time.monotonic() - sent
        assert took >= 2 * ACK_S - 0.01, took  # not before the consumer was silent two intervals
        await sub.unsubscribe()
        stream = router.statistics().endpoints["ask_stream"]
        assert stream.last_error == f"{m.CANCELLED}: {UNHEARD}", stream
        produced = provider.statistics().endpoints["stream"]
        assert produced.last_error.startswith(f"{m.CANCELLED}: "), produced  # the router's Cancel, not a timeout


async def test_a_client_whose_connection_closes_hard_stops_the_work(stack, nats_url, root):
    """A client's connection closes under its stream (no Cancel is sent): the router hears no more
    acks and stops, and the provider call with it, within two of the client's intervals."""
    async with stack(MOCKS) as s:
        provider, router = s.actor("provider.a"), s.actor("router")
        client = Client(nats_url, root=root, stream_ack_s=ACK_S)
        await client.__aenter__()
        items = client.stream("one two three four five six", labels={"mock.fault": "stall_stream"},
                              budget_ms=20_000)
        chunk = await items.__anext__()
        assert isinstance(chunk, m.Chunk)
        await wait_until(lambda: provider.in_flight() == 1, what="the provider streams")
        await client.nc.close()  # gone: no Cancel, no more acks
        silent = time.monotonic()
        await wait_until(lambda: provider.in_flight() == 0 and router.in_flight() == 0,
                         within_s=2 * ACK_S + SLACK_S, what="the router and the provider call stopped")
        assert time.monotonic() - silent < 2 * ACK_S + SLACK_S
        assert router.statistics().endpoints["ask_stream"].last_error == f"{m.CANCELLED}: {UNHEARD}"
        await items.aclose()
        await client.__aexit__(None, None, None)


async def test_acks_keep_a_slow_stream_alive_past_two_intervals(stack):
    """A consumer that keeps reading keeps both legs alive (client → router, router → provider)
    while nothing comes for many intervals: the stream ends at its deadline, not by silence."""
    async with stack(MOCKS) as s:
        s.client.stream_ack_s = ACK_S
        provider = s.actor("provider.a")
        started = time.monotonic()
        items = [i async for i in s.client.stream("one two three four", labels={"mock.fault": "stall_stream"},
                                                  budget_ms=int(5 * ACK_S * 1000), strategy="single",
                                                  providers=["a"])]
        took = time.monotonic() - started
        *chunks, final = items
        assert chunks and all(isinstance(c, m.Chunk) for c in chunks)
        assert isinstance(final, m.Failure) and final.kind == m.TIMEOUT, final
        assert took >= 4 * ACK_S, took  # well past two intervals of silence
        await wait_until(lambda: provider.in_flight() == 0, what="the provider call ended")
        assert provider.statistics().endpoints["stream"].last_error.startswith(f"{m.TIMEOUT}: ")


async def test_a_stream_without_acks_asked_is_never_stopped_for_silence(stack):
    """No ``Llm-Ack-Ms`` (an older client, ``nats req``): the producer expects no acks."""
    async with stack(MOCKS) as s:
        s.client.stream_ack_s = 0.0
        items = [i async for i in s.client.stream("one two", labels={"mock.fault": "stall_stream"},
                                                  budget_ms=int(3 * ACK_S * 1000), strategy="single",
                                                  providers=["a"])]
        assert isinstance(items[-1], m.Failure) and items[-1].kind == m.TIMEOUT, items[-1]


async def test_a_vanished_consumer_of_a_review_stops_every_drafting_worker(stack):
    """``review`` runs its drafts as plain calls in parallel: a silent consumer stops the router,
    whose runner cancels every worker call on the bus."""
    async with stack(MOCKS) as s:
        a, b, router = s.actor("provider.a"), s.actor("provider.b"), s.actor("router")
        request = ask(strategy="review", labels={"mock.fault": "stall"})
        inbox = s.client.nc.new_inbox()
        sub = await s.client.nc.subscribe(inbox)  # reads nothing, acks nothing
        hdrs = {BUDGET_HEADER: "20000", ASK_ID_HEADER: request.id, ACK_HEADER: str(int(ACK_S * 1000))}
        await s.client.nc.publish(s.client.subjects.ask_stream, codec.encode(request), reply=inbox, headers=hdrs)
        await wait_until(lambda: a.in_flight(request.id) == 1 and b.in_flight(request.id) == 1,
                         what="both workers drafting")
        drafting = time.monotonic()
        await wait_until(lambda: a.in_flight() == 0 and b.in_flight() == 0 and router.in_flight() == 0,
                         within_s=2 * ACK_S + SLACK_S, what="every worker call stopped")
        assert time.monotonic() - drafting < 2 * ACK_S + SLACK_S
        for worker in (a, b):
            assert worker.statistics().endpoints["complete"].last_error.startswith(f"{m.CANCELLED}: ")
        await sub.unsubscribe()


async def test_a_consumer_acks_every_n_chunks(stack):
    """The router reads a provider's stream of 12 chunks with ``stream_ack_chunks = 2`` (and an
    interval that never passes here): six acks, each with the seq it had read, the call's id."""
    toml = MOCKS.replace(f"stream_ack_s = {ACK_S}", "stream_ack_s = 30")
    async with stack(toml) as s:
        acks: list[m.StreamAck] = []

        async def on(msg) -> None:
            acks.append(codec.stream_ack.decode(msg.data))

        sub = await s.client.nc.subscribe(s.client.subjects.stream_ack, cb=on)
        s.client.stream_ack_s = 30.0
        words = " ".join(f"w{i}" for i in range(11))  # "[a]" and 11 words: 12 chunks
        items = [i async for i in s.client.stream(words, strategy="single", providers=["a"], budget_ms=5000)]
        assert isinstance(items[-1], m.Answer), items[-1]
        await s.client.nc.flush()
        await wait_until(lambda: len(acks) >= 6, within_s=2.0, what="six acks")
        await sub.unsubscribe()
        call_id = items[-1].route[0].call_id
        assert [(a.call_id, a.seq) for a in acks] == [(call_id, seq) for seq in (1, 3, 5, 7, 9, 11)]


async def test_a_provider_whose_router_vanished_stops_its_stream(stack):
    """The router's leg: a provider stream asked for acks and never acked stops within two
    intervals (a router killed mid-stream sends no Cancel either)."""
    async with stack(MOCKS, names=["provider.a"]) as s:
        provider = s.actor("provider.a")
        request = m.Complete(id=new_id(), ask_id=new_id(), messages=[m.Message(role="user", content="one two three four")],
                             labels={"mock.fault": "stall_stream"})
        inbox = s.client.nc.new_inbox()
        sub = await s.client.nc.subscribe(inbox)
        hdrs = {BUDGET_HEADER: "20000", ASK_ID_HEADER: request.ask_id, ACK_HEADER: str(int(ACK_S * 1000))}
        sent = time.monotonic()
        await s.client.nc.publish(s.client.subjects.provider_stream("a"), codec.encode(request), reply=inbox,
                                  headers=hdrs)
        await wait_until(lambda: provider.in_flight(request.ask_id) == 1, what="the provider streams")
        await wait_until(lambda: provider.in_flight() == 0, within_s=2 * ACK_S + SLACK_S, what="the provider stopped")
        assert time.monotonic() - sent >= 2 * ACK_S - 0.01
        assert provider.statistics().endpoints["stream"].last_error == f"{m.CANCELLED}: {UNHEARD}"
        await sub.unsubscribe()
