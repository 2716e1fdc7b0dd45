"""``llmbus replay``: re-run a recorded ask through a router under an isolated root, each provider
call answered from the recording (``ReplayProvider``): no keys, no network, no live budgets, cache,
breakers or ledger (the isolated root has its own, and the router here runs without cost, health
and cache). Its streams and buckets are deleted afterwards.

A call the recording has no reply for (another strategy asks more providers, or more often) is
answered ``unavailable`` naming it — or, with ``live=True`` (``llmbus replay --live``), sent to
that provider of the live fleet (the recorded root), as ``<ask id>-live``: a real call, billed and
counted there like any other.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import anyio
import msgspec
from nats.aio.client import Client as NATS

from bus import codec
from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context, Endpoint
from bus.rpc import Rpc, new_id
from bus.streams import delete_root
from bus.subjects import PROVIDER_COMPLETE, Subjects
from actors import recording
from actors.runtime import Actor, run_actors
from actors.settings import Settings

_REPLY = codec.decoder(m.CompleteReply)


class ReplayProvider(Actor):
    """Answers provider ``provider``'s calls with its recorded replies for the call's ask
    (``replies[ask_id]``), in order; a call beyond them gets ``Failure(unavailable)`` naming it."""

    kind = "replay"

    def __init__(self, *, provider: str, replies: dict[str, list[bytes]], live: Rpc | None = None, **kw) -> None:
        super().__init__(name=f"provider-{provider}", **kw)
        self.provider = provider
        self.replies = replies
        self.live = live  # the live fleet's root: calls with no recording go there (replay --live)
        self.served: dict[str, int] = {}
        self.missing: dict[str, int] = {}
        self.went_live: dict[str, int] = {}

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint.serving(PROVIDER_COMPLETE, self.subjects, self.complete, name=self.provider)]

    async def complete(self, req: m.Complete, ctx: Context) -> m.Completion | m.Failure:
        recorded = self.replies.get(req.ask_id, ())
        n = self.served.get(req.ask_id, 0)
        if n >= len(recorded):
            self.missing[req.ask_id] = self.missing.get(req.ask_id, 0) + 1
            if self.live is not None:
                self.went_live[req.ask_id] = self.went_live.get(req.ask_id, 0) + 1
                live = msgspec.structs.replace(req, ask_id=f"{req.ask_id}-live")
                return await self.live.call(PROVIDER_COMPLETE.subject(self.live.subjects, self.provider), live,
                                            codec.complete_reply, deadline=ctx.deadline, ask_id=live.ask_id,
                                            call_id=req.id)
            return m.Failure(kind=m.UNAVAILABLE, message=f"replay: no recorded reply for call {n + 1} "
                                                          f"of {self.provider}", provider=self.provider)
        self.served[req.ask_id] = n + 1
        reply = _REPLY.decode(recorded[n])
        if isinstance(reply, m.Completion):
            return msgspec.structs.replace(reply, id=req.id, ask_id=req.ask_id)
        return reply


@dataclass
class Replayed:
    ask_id: str
    root: str
    strategy: str | None
    recorded: m.Answer | m.Failure | None
    result: m.Answer | m.Failure
    served: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)  # provider -> calls that had no recording
    live: dict[str, int] = field(default_factory=dict)  # provider -> of those, calls sent to the live fleet

    @property
    def same(self) -> bool:
        return text_of(self.recorded) == text_of(self.result)

    def diff(self) -> str:
        a, b = text_of(self.recorded).splitlines(), text_of(self.result).splitlines()
        return "\n".join(difflib.unified_diff(a, b, "recorded", "replayed", lineterm=""))


def text_of(reply) -> str:
    if reply is None:
        return ""
    if isinstance(reply, m.Failure):
        return f"Failure {reply.kind}: {reply.message}"
    return reply.text


def replay_settings(settings: Settings, root: str) -> Settings:
    """The live settings under ``root``, with no cost, health, cache or recording."""
    s = settings
    tiers = {name: msgspec.structs.replace(t, record=None) for name, t in s.tiers.items()}
    return msgspec.structs.replace(
        s, bus=msgspec.structs.replace(s.bus, root=root), tiers=tiers,
        cost=msgspec.structs.replace(s.cost, enabled=False),
        health=msgspec.structs.replace(s.health, enabled=False),
        cache=msgspec.structs.replace(s.cache, enabled=False),
        record=msgspec.structs.replace(s.record, sampling="off"))


async def replay(nc: NATS, url: str, settings: Settings, ask_id: str, *, strategy: str | None = None,
                 budget_ms: int = 30_000, trace: recording.Trace | None = None, live: bool = False) -> Replayed:
    """Replay ``ask_id`` (recorded under ``settings.bus.root``) on the server at ``url``."""
    tr = trace or await recording.trace(nc, Subjects(settings.bus.root), ask_id)
    recording.recorded_ask(tr)  # LookupError when the ask is not in the recording
    return (await replay_many(nc, url, settings, [tr], strategy=strategy, budget_ms=budget_ms, live=live))[0]


async def replay_many(nc: NATS, url: str, settings: Settings, traces: list[recording.Trace], *,
                      strategy: str | None = None, budget_ms: int = 30_000, concurrency: int = 64,
                      live: bool = False) -> list[Replayed]:
    """Replay every traced ask through one router under one isolated root, ``concurrency`` at a time
    (``live``: calls with no recording go to the live fleet's providers, over ``nc``)."""
    from actors.router.actor import Router
    from bus.client import Client

    found = []
    for tr in traces:
        try:
            found.append((tr, *recording.recorded_ask(tr)))
        except (LookupError, msgspec.DecodeError, msgspec.ValidationError):
            continue
    replies: dict[str, dict[str, list[bytes]]] = {}
    for tr, _, _ in found:
        for provider, got in recording.provider_replies(tr).items():
            replies.setdefault(provider, {})[tr.ask_id] = got
    root = "replay-" + new_id()[-10:].replace("-", "_")
    rs = replay_settings(settings, root)
    common = dict(subjects=Subjects(root), default_budget_ms=rs.bus.default_budget_ms, stop_grace_s=1.0,
                  connect_options=rs.bus.connect_options())
    live_rpc = await Rpc(nc, Subjects(settings.bus.root)).start() if live else None
    providers = [ReplayProvider(provider=name, replies=replies.get(name, {}), live=live_rpc, **common)
                 for name in rs.providers]
    actors = [Router(settings=rs, **common), *providers]
    results: list[m.Answer | m.Failure | None] = [None] * len(found)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, url)
            try:
                async with Client(url, root=root, name="llmbus-replay", options=rs.bus.connect_options()) as client:
                    limit = anyio.Semaphore(concurrency)

                    async def one(i: int, tr: recording.Trace, ask: m.Ask) -> None:
                        async with limit:
                            ask = msgspec.structs.replace(ask, cache="skip", budget_ms=budget_ms,
                                                          strategy=strategy if strategy is not None else ask.strategy)
                            if strategy is None and ask.providers is None:  # as recorded: the providers
                                called = recording.providers_called(tr)  # the breakers let through then
                                ask = msgspec.structs.replace(ask, providers=called or None)
                            results[i] = await client.send(ask, deadline=now() + budget_ms / 1000.0)

                    async with anyio.create_task_group() as asks:
                        for i, (tr, ask, _) in enumerate(found):
                            asks.start_soon(one, i, tr, ask)
            finally:
                for a in actors:
                    a.stop()
    finally:
        with anyio.CancelScope(shield=True):
            if live_rpc is not None:
                await live_rpc.close()
            await delete_root(nc, root)
    return [Replayed(tr.ask_id, root, strategy, recorded, results[i],
                     served={p.provider: p.served[tr.ask_id] for p in providers if tr.ask_id in p.served},
                     missing={p.provider: p.missing[tr.ask_id] for p in providers if tr.ask_id in p.missing},
                     live={p.provider: p.went_live[tr.ask_id] for p in providers if tr.ask_id in p.went_live})
            for i, (tr, _, recorded) in enumerate(found)]
