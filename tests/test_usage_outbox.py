"""Usage events survive a time without the events stream (actors/providers/events.py): published
with a JetStream acknowledgement, kept in a bounded outbox and sent again until the stream has
them, so the ledger bills every answered call once the stream is back.

The stream is made unavailable on the real server by moving its subjects away (``away``): a
JetStream publish then finds no stream (no responders), as it does in a cluster while the stream
has no leader, and a plain publish is dropped — while the cost actor's durable consumer stays.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
import nats
import pytest

from actors import metrics
from actors.providers.events import UsageOutbox
from bus import codec
from bus import messages as m
from bus.streams import delete_root, ensure_events_stream
from bus.subjects import Subjects
from tests.helpers import wait_until
from tests.test_cost import pricing_file  # noqa: F401 — the fixture

TOML = """
[router]
strategy = "single"
providers = ["p"]

[providers.p]
model = "m-1"

[cost]
pricing = "{pricing}"
"""


@pytest.fixture
async def events(nats_url, root):
    """A connection and the subjects of a root whose events stream exists (deleted afterwards)."""
    subjects = Subjects(root)
    nc = await nats.connect(nats_url)
    try:
        await ensure_events_stream(nc, subjects)
        yield nc, subjects
    finally:
        await delete_root(nc, root)
        await nc.close()


@asynccontextmanager
async def away(nc, subjects: Subjects):
    """The events stream captures nothing of the root inside this block (its consumers stay)."""
    js = nc.jetstream()
    config = (await js.stream_info(subjects.events_stream)).config
    kept = config.subjects
    config.subjects = [f"{subjects.root}.elsewhere.>"]
    await js.update_stream(config)
    try:
        yield
    finally:
        config.subjects = kept
        with anyio.CancelScope(shield=True):
            await js.update_stream(config)


def usage(i: int) -> m.Usage:
    return m.Usage(ask_id=f"a{i}", call_id="c", provider="p", model="m-1",
                   usage=m.TokenUsage(input_tokens=10), at=1_764_000_000.0)


async def stored(nc, subjects: Subjects) -> int:
    return (await nc.jetstream().stream_info(subjects.events_stream)).state.messages


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_usage_published_while_the_events_stream_is_away_reaches_the_ledger(stack, pricing_file):
    async with stack(TOML.format(pricing=pricing_file)) as s:
        cost = next(a for a in s.actors if a.kind == "cost")
        provider = next(a for a in s.actors if a.kind == "provider")
        outbox = provider.events.outbox
        dropped_before = metrics.USAGE_DROPPED.get(("p",), 0)
        await s.client.ask("before", budget_ms=3000)
        await wait_until(lambda: len(cost.totals.calls) == 1, what="the first call in the ledger")
        async with away(s.client.nc, s.client.subjects):
            for i in range(5):
                assert isinstance(await s.client.ask(f"during {i}", budget_ms=3000), m.Answer)
            await wait_until(lambda: len(outbox) == 5 and outbox.failed >= 1, what="5 usage events kept, unacked")
            assert len(cost.totals.calls) == 1  # nothing reached the ledger meanwhile
        await wait_until(lambda: len(cost.totals.calls) == 6, within_s=5.0, what="all 6 calls in the ledger")
        assert len(outbox) == 0 and outbox.dropped == 0
        assert metrics.USAGE_DROPPED.get(("p",), 0) == dropped_before


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_the_outbox_drops_beyond_its_age_and_counts_it(events, root):
    nc, subjects = events
    t = [0.0]
    outbox = UsageOutbox(subjects.usage("p"), provider=f"p-{root}", max_age_s=60.0, clock=lambda: t[0])
    async with away(nc, subjects):
        outbox.put([usage(0), usage(1)])
        assert not await outbox.send(nc)  # no stream: kept
        t[0] = 30.0
        outbox.put([usage(2)])
        assert not await outbox.send(nc)
        assert len(outbox) == 3 and outbox.dropped == 0
        t[0] = 61.0  # the first batch is older than the outbox keeps
        assert not await outbox.send(nc)
        assert len(outbox) == 1 and outbox.dropped == 2
        assert metrics.USAGE_DROPPED[(f"p-{root}",)] == 2
    assert await outbox.send(nc)
    assert len(outbox) == 0 and outbox.sent == 1 and await stored(nc, subjects) == 1


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_the_outbox_drops_beyond_its_bytes(events, root):
    nc, subjects = events
    one = len(codec.encode(usage(0)))
    outbox = UsageOutbox(subjects.usage("p"), provider=f"p-{root}", max_items=1, max_bytes=3 * one)
    async with away(nc, subjects):
        outbox.put([usage(i) for i in range(5)])  # batches of one event each
        assert not await outbox.send(nc)
        assert len(outbox) == 3 and outbox.dropped == 2  # the oldest went
    assert await outbox.send(nc)
    assert await stored(nc, subjects) == 3


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_a_batch_sent_again_after_a_lost_ack_is_stored_once(events):
    """A re-send keeps the batch's Nats-Msg-Id: the server recognises a copy it already has."""
    nc, subjects = events
    outbox = UsageOutbox(subjects.usage("p"), provider="p")
    outbox.put([usage(0), usage(1)])
    outbox._keep()
    batch = outbox.unacked[0]
    assert await outbox.send(nc)
    outbox.unacked.append(batch)  # as if its ack had been lost: it is sent again as it was
    outbox.bytes += len(batch.payload)
    assert await outbox.send(nc)
    assert outbox.duplicates == 1 and await stored(nc, subjects) == 1


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_a_stopping_provider_sends_what_is_left_within_its_grace(events, root):
    nc, subjects = events
    outbox = UsageOutbox(subjects.usage("p"), provider=f"p-{root}")
    async with anyio.create_task_group() as tg:
        async with away(nc, subjects):
            outbox.put([usage(0)])
            tg.start_soon(outbox.close, nc, 10.0)
            await wait_until(lambda: outbox.failed >= 1, what="a first publish unacknowledged")
        # the stream is back: close's next try gets the ack
    assert len(outbox) == 0 and outbox.dropped == 0 and await stored(nc, subjects) == 1
    async with away(nc, subjects):  # still away at the end of the grace: dropped, counted
        outbox.put([usage(1)])
        await outbox.close(nc, 0.2)
    assert outbox.dropped == 1 and metrics.USAGE_DROPPED[(f"p-{root}",)] == 1


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_without_jetstream_at_setup_usage_goes_as_plain_publishes(events):
    """``acked=False`` (the provider's setup found no JetStream): nothing would ever acknowledge,
    so the batch is published plain and not kept."""
    nc, subjects = events
    got: list[bytes] = []

    async def seen(msg) -> None:
        got.append(msg.data)

    sub = await nc.subscribe(subjects.usage("p"), cb=seen)
    await nc.flush()
    outbox = UsageOutbox(subjects.usage("p"), provider="p")
    outbox.acked = False
    async with away(nc, subjects):  # no stream answers: a plain publish still reaches subscribers
        outbox.put([usage(0), usage(1)])
        assert await outbox.send(nc)
        await wait_until(lambda: len(got) == 1, what="the batch on the subject")
    await sub.unsubscribe()
    assert len(outbox) == 0 and outbox.sent_events == 2 and outbox.failed == 0
