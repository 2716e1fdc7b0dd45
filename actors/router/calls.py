"""The router's side of a strategy's calls: one ``AskCalls`` per ask (the runner's ``Calls``).

For a provider call it builds the ``Complete`` from the ask (``Complete.of``, with the policy's
overrides), checks money before the call goes out, sends it with its own call id and deadline,
and prices the reply. Money counts calls in flight: the per-ask ceiling (``max_cost_usd``) must
hold what was spent **plus the worst case of every call still open**, so N parallel calls cannot
overshoot it; with a user or tier budget each call also holds a reservation of its worst case at
the cost actor until it ends (``Commit``), a cancelled call included.

A call to any other row of the RPC table (a supervisor review, …) is sent as it is.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from bus import codec
from bus import messages as m
from bus.rpc import is_no_responders, new_id
from bus.subjects import PROVIDER_COMPLETE, PROVIDER_STREAM
from actors.strategies.base import Call, outcome_of
from actors.strategies.runner import Record

if TYPE_CHECKING:
    from actors.router.actor import Router
    from actors.router.stream import Relay


class AskCalls:
    __slots__ = ("router", "ask", "strategy", "spent", "unknown", "held", "worst", "relay")

    def __init__(self, router: Router, ask: m.Ask, strategy: str, relay: Relay | None = None) -> None:
        self.router = router
        self.ask = ask
        self.strategy = strategy
        self.relay = relay  # a streamed ask's (actors.router.stream): provider calls are streamed into it
        self.spent = 0.0  # priced cost of the calls answered so far
        self.unknown = False  # a call answered by a model with no price: the total is unknown
        self.held = 0.0  # worst cases of the calls in flight
        self.worst: dict[str, float] = {}  # call id -> the worst case it holds

    @staticmethod
    def new_id() -> str:
        return new_id()

    def progress(self, shown: Any) -> None:
        """A policy's ``Progress``: a stage Chunk, when this ask is streamed."""
        if self.relay is not None:
            self.relay.chunk(m.Chunk(id=self.ask.id, seq=0, delta=shown.text, stage=shown.stage))

    @property
    def cost_usd(self) -> float | None:
        return None if self.unknown else round(self.spent, 9)

    async def call(self, call: Call, call_id: str, deadline: float):
        router = self.router
        if call.provider is None:
            return await router.rpc.service(call.service, call.request, name=call.name, deadline=deadline,
                                            ask_id=self.ask.id, call_id=call_id)
        provider = call.provider
        ask = self.ask
        request = m.Complete.of(ask, id=call_id, strategy=self.strategy, messages=call.messages, schema=call.schema,
                                no_schema=call.no_schema, params=call.params)
        budgets = router.budgets
        if budgets is not None and (ask.max_cost_usd is not None or budgets.applies(ask)):
            refused, worst = await budgets.before(ask, provider, call_id, self.spent + self.held, deadline)
            if refused is not None:
                return refused
            self.held += worst
            self.worst[call_id] = worst
        if self.relay is None or not self.relay.through:
            subject = router.complete_subjects.get(provider) or router.complete_subject(provider)
            result = await router.rpc.call(subject, request, codec.complete_reply, deadline=deadline,
                                           ask_id=ask.id, call_id=call_id)
        else:
            result = await self._streamed(provider, request, call_id, deadline)
        if isinstance(result, m.Failure) and result.provider is None:
            result = msgspec.structs.replace(result, provider=provider)
            if is_no_responders(result):  # gone: nobody else will report it
                await router.report_gone(provider)
        if budgets is not None:
            cost = budgets.cost(provider, result) if isinstance(result, m.Completion) else 0.0
            if cost is None:
                self.unknown = True
                router.warn_unpriced(provider, result.model)
            else:
                self.spent += cost
            await self._release(call_id, cost)
        return result

    async def _streamed(self, provider: str, request: m.Complete, call_id: str, deadline: float):
        """A provider call on its stream subject: chunks go to the relay; returns the final reply."""
        relay = self.relay
        first = True
        bus = self.router.settings.bus
        async for item in self.router.rpc.stream(PROVIDER_STREAM.subject(self.router.subjects, provider), request,
                                                 deadline=deadline, ask_id=self.ask.id, call_id=call_id,
                                                 ack_s=bus.stream_ack_s, ack_chunks=bus.stream_ack_chunks):
            if first and (item.__class__ is m.Chunk or item.__class__ is m.Completion):
                relay.begin()  # after an earlier call's text: the consumer discards it (reset)
                first = False
            if item.__class__ is not m.Chunk:
                return item
            relay.chunk(item)
        return m.Failure(kind=m.INTERNAL, message=f"{provider}: the stream ended without a final reply")

    async def cancel(self, record: Record, reason: str) -> None:
        await self.router.rpc.cancel(self.ask.id, record.call_id, reason=reason)
        await self._release(record.call_id, 0.0)

    async def _release(self, call_id: str, cost: float | None) -> None:
        worst = self.worst.pop(call_id, None)
        if worst is not None:
            self.held -= worst
            await self.router.budgets.after(self.ask, call_id, cost)


class StreamedCalls(AskCalls):
    """A streamed ask's calls: each also reported to the relay as it starts and ends (live
    progress). A subclass, so a plain ask's calls pay nothing for it."""

    __slots__ = ()

    async def call(self, call: Call, call_id: str, deadline: float):
        self.relay.worker(worker_of(call), "running")
        result = await super().call(call, call_id, deadline)
        self.relay.worker(worker_of(call), outcome_of(result))
        return result

    async def cancel(self, record: Record, reason: str) -> None:
        self.relay.worker(worker_of(record.call), "cancelled")
        await super().cancel(record, reason)


def worker_of(call: Call) -> str:
    """How a streamed ask's progress names a call: the provider ("a"), with what for when it is
    not the answer itself ("b (regenerate)"); a service call by its name ("supervisor")."""
    if call.provider is None or call.purpose == "answer":
        return call.target
    return f"{call.target} ({call.purpose})"


def gone(provider: str) -> bytes:
    """The Outcome a router publishes for a provider nobody serves (no responders)."""
    return codec.encode(m.Outcome(provider=provider, ok=False, kind=m.UNAVAILABLE, at=time.time(), source="router"))
