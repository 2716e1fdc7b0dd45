"""``llmbus replay``: re-run a recorded ask through a router under an isolated root, each provider
call answered from the recording (``ReplayProvider``): no keys, no network, no live budgets, cache,
breakers or ledger (the isolated root has its own, and the router here runs without cost, health
and cache). Its streams and buckets are deleted afterwards.
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
from bus.rpc import new_id
from bus.streams import delete_root
from bus.subjects import PROVIDER_COMPLETE, Subjects
from actors import recording
from actors.runtime import Actor, run_actors
from actors.settings import Settings

_REPLY = codec.decoder(m.CompleteReply)


class ReplayProvider(Actor):
    """Answers provider ``provider``'s calls with its recorded replies for the ask, in order; a call
    beyond them gets ``Failure(unavailable)`` naming it (``missing`` lists them)."""

    kind = "replay"

    def __init__(self, *, provider: str, replies: list[bytes], **kw) -> None:
        super().__init__(name=f"provider-{provider}", **kw)
        self.provider = provider
        self.replies = list(replies)
        self.served = 0
        self.missing: list[str] = []

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint.serving(PROVIDER_COMPLETE, self.subjects, self.complete, name=self.provider)]

    async def complete(self, req: m.Complete, ctx: Context) -> m.Completion | m.Failure:
        if self.served >= len(self.replies):
            self.missing.append(req.id)
            return m.Failure(kind=m.UNAVAILABLE, message=f"replay: no recorded reply for call {self.served + 1} "
                                                          f"of {self.provider}", provider=self.provider)
        reply = _REPLY.decode(self.replies[self.served])
        self.served += 1
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
    return msgspec.structs.replace(
        s, bus=msgspec.structs.replace(s.bus, root=root),
        cost=msgspec.structs.replace(s.cost, enabled=False),
        health=msgspec.structs.replace(s.health, enabled=False),
        cache=msgspec.structs.replace(s.cache, enabled=False),
        record=msgspec.structs.replace(s.record, sampling="off"))


async def replay(nc: NATS, url: str, settings: Settings, ask_id: str, *, strategy: str | None = None,
                 budget_ms: int = 30_000, trace: recording.Trace | None = None) -> Replayed:
    """Replay ``ask_id`` (recorded under ``settings.bus.root``) on the server at ``url``."""
    from actors.router.actor import Router
    from bus.client import Client

    live = Subjects(settings.bus.root)
    tr = trace or await recording.trace(nc, live, ask_id)
    ask, recorded = recording.recorded_ask(tr)
    replies = recording.provider_replies(tr)
    root = "replay-" + new_id()[-10:].replace("-", "_")
    rs = replay_settings(settings, root)
    common = dict(subjects=Subjects(root), default_budget_ms=rs.bus.default_budget_ms, stop_grace_s=1.0,
                  connect_options=rs.bus.connect_options())
    providers = [ReplayProvider(provider=name, replies=replies.get(name, []), **common) for name in rs.providers]
    router = Router(settings=rs, **common)
    actors = [router, *providers]
    ask = msgspec.structs.replace(ask, cache="skip", budget_ms=budget_ms,
                                  strategy=strategy if strategy is not None else ask.strategy)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, url)
            try:
                async with Client(url, root=root, name="llmbus-replay", options=rs.bus.connect_options()) as client:
                    result = await client.send(ask, deadline=now() + budget_ms / 1000.0)
            finally:
                for a in actors:
                    a.stop()
    finally:
        with anyio.CancelScope(shield=True):
            await delete_root(nc, root)
    return Replayed(ask_id, root, strategy, recorded, result,
                    served={p.provider: p.served for p in providers if p.served},
                    missing={p.provider: len(p.missing) for p in providers if p.missing})
