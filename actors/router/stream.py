"""A streamed ask (``<root>.ask.stream``): the router's Chunks, then the final Answer or Failure.

With ``single`` and ``failover`` the provider calls go to the providers' stream subject and their
chunks are passed through as they come, renumbered for the ask (``Chunk.id`` is the ask id, ``seq``
counts from 0 over the whole ask). When a provider's stream breaks and failover moves on, one
``Chunk(reset=True, stage="restart")`` says the text so far is void: the consumer discards it and
the next provider starts over (stream rescue: no text is shown twice). Every call of the ask is
also reported as it starts and ends (``Chunk(worker=…, state=…)``, no text), for live progress.
Any other strategy runs as a plain ask and its final Answer is the stream's only message.

A streamed ask is not looked up in the cache, nor deduplicated by id: its chunks exist only once.
The plain ask path does not pay for any of this (``AskCalls.relay`` is None there).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context, Encoded
from actors import metrics

if TYPE_CHECKING:
    from actors.router.actor import Router

# the policies whose calls run one at a time, so a provider's stream can be passed through as it is
STREAM_THROUGH = frozenset({"single", "failover"})
# the policies that report their stages (``Progress``: draft → enhanced → final) as Chunks
STAGED = frozenset({"review"})


class Relay:
    """Carries one ask's chunks from its provider calls to the stream's reply."""

    __slots__ = ("ask_id", "queue", "seq", "calls_streamed", "through")

    def __init__(self, ask_id: str, *, through: bool = True) -> None:
        self.ask_id = ask_id
        self.through = through  # False: provider calls are plain, only the policy's stages are streamed
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seq = 0
        self.calls_streamed = 0  # calls that sent at least one chunk

    def begin(self) -> None:
        """A call's first chunk: after an earlier call's chunks, say the answer starts over."""
        if self.calls_streamed:
            self._put(m.Chunk(id=self.ask_id, seq=self.seq, stage="restart", reset=True))
        self.calls_streamed += 1

    def worker(self, name: str, state: str) -> None:
        """A call started ("running") or ended (its outcome)."""
        self._put(m.Chunk(id=self.ask_id, seq=self.seq, worker=name, state=state))

    def chunk(self, chunk: m.Chunk) -> None:
        self._put(m.Chunk(id=self.ask_id, seq=self.seq, delta=chunk.delta, stage=chunk.stage))

    def _put(self, chunk: m.Chunk) -> None:
        self.seq += 1
        self.queue.put_nowait(chunk)

    def end(self, result: m.Answer | m.Failure) -> None:
        self.queue.put_nowait(result)


async def serve_stream(router: Router, ask: m.Ask, ctx: Context) -> AsyncIterator[m.Chunk | m.Answer | m.Failure]:
    """The streaming endpoint's handler (see the module docstring)."""
    from actors.router.actor import check_ask

    bad = check_ask(ask)
    if bad is not None:
        yield bad
        return
    # a tier or preset chooses the strategy here too, and a tier's fallback routes run in turn
    named = ask.strategy is not None  # the ask as it came named its strategy: it runs on every route
    routed = router.routing.prepare(ask) if router.routing.applies(ask) else ask
    if type(routed) is m.Failure:
        yield routed
        return
    strategy = router.strategy_for(routed)
    if strategy not in STREAM_THROUGH and strategy not in STAGED:
        reply = await router._serve_ask(ask, ctx)  # as it came: the plain path routes it itself
        yield reply.value if type(reply) is Encoded else reply
        return
    ask = routed
    relay = Relay(ask.id, through=strategy in STREAM_THROUGH)

    async def one(sub: m.Ask, sub_ctx: Context) -> m.Answer | m.Failure:
        # each fallback route has its own strategy: its provider calls are passed through only
        # when it runs them one at a time (a later route's text follows a reset)
        relay.through = router.strategy_for(sub) in STREAM_THROUGH
        return await router.route(sub, sub_ctx, relay)

    run = router.routing.runner(ask, one, named=named) if router.routing.applies(ask) else one

    async def work() -> None:
        try:
            result = await run(ask, ctx)
        except Exception as exc:  # a bug: the stream still ends with a Failure
            router.log.exception("stream_failed", ask_id=ask.id)
            result = m.Failure(kind=m.INTERNAL, message=f"router: {type(exc).__name__}: {exc}")
        relay.end(result)
        metrics.asked(getattr(result, "strategy", None) or strategy, ask.tier, result, now() - ctx.arrival)

    task = asyncio.create_task(work())
    try:
        while True:
            item = await relay.queue.get()
            yield item
            if item.__class__ is not m.Chunk:
                return
    finally:
        if not task.done():
            task.cancel()
