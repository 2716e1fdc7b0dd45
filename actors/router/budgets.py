"""The router's side of cost: prices, the per-ask ceiling, and budget reservations.

Which users and tiers have a budget is mirrored from the cost bucket (``limit.*`` keys) by a KV
watch, so an ask with no budget costs no round trip at all. When one applies, each provider call
is preceded by a ``Reserve`` of its worst case (every prompt token uncached + ``max_tokens``) to the
cost actor, and followed by a ``Commit`` of its actual cost, published without waiting. The cost
actor answers within a slice of the remaining budget (at most 250 ms or 25 %); when it cannot be
reached, the call is refused (``unavailable``): a budget that cannot be checked is not spent.

``max_cost_usd`` on an Ask needs no cost actor: the worst case of the next call plus what the ask
has spent so far and the worst cases of its calls still in flight (``actors.router.calls``) must fit
under it.
"""

from __future__ import annotations

import time

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.client import Client as NATS

from bus import messages as m
from bus.deadline import now
from bus.rpc import Rpc
from bus.streams import KvMirror
from bus.subjects import COST_COMMIT, COST_RESERVE, Subjects
from actors.pure.pricing import Pricing
from actors.pure.tokens import estimate_tokens
from actors.settings import Settings

RESERVE_SLICE = (0.25, 0.25)  # a reservation gets at most 250 ms or 25 % of what is left
_budget = msgspec.json.Decoder(m.BudgetSet)


class Budgets:
    def __init__(self, nc: NATS, rpc: Rpc, subjects: Subjects, settings: Settings, pricing: Pricing | None) -> None:
        self.nc = nc
        self.rpc = rpc
        self.subjects = subjects
        self.settings = settings
        self.pricing = pricing
        self.scoped: set[tuple[str, str]] = set()  # (scope, name) with at least one budget
        self._names: dict[str, tuple[str, str]] = {}
        self.mirror = KvMirror(nc, subjects.bucket("cost"), "limit.>", on_change=self._changed)

    def _changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._names.pop(key, None)
        else:
            b = _budget.decode(value)
            self._names[key] = (b.scope, b.name)
        self.scoped = set(self._names.values())

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        await self.mirror.run(task_status=task_status)

    # --- prices ------------------------------------------------------------------------------
    def kind(self, provider: str) -> str:
        config = self.settings.providers.get(provider)
        return config.kind if config is not None else provider

    def cost(self, provider: str, completion: m.Completion) -> float | None:
        if self.pricing is None:
            return None
        return self.pricing.cost(self.kind(provider), completion.model, completion.usage)

    def worst_case(self, provider: str, ask: m.Ask) -> float | None:
        config = self.settings.providers.get(provider)
        if self.pricing is None or config is None:
            return None
        model = ask.params.model or config.model or f"{provider}-1"
        prompt = estimate_tokens(" ".join(msg.text() for msg in ask.messages))
        return self.pricing.worst_case(config.kind, model, prompt, ask.params.max_tokens or config.max_tokens)

    # --- before and after a call --------------------------------------------------------------
    def applies(self, ask: m.Ask) -> bool:
        return bool(self.scoped) and (("user", ask.user) in self.scoped or ("tier", ask.tier) in self.scoped)

    async def before(
        self, ask: m.Ask, provider: str, call_id: str, committed: float, deadline: float
    ) -> tuple[m.Failure | None, float]:
        """(None, the call's worst case) when the call may go ahead — a reservation is then held
        when a budget applies — else (the refusal, 0). ``committed``: spent + in flight."""
        worst = None
        if ask.max_cost_usd is not None:
            worst = self.worst_case(provider, ask)
            if worst is None:
                return m.Failure(kind=m.BUDGET_EXCEEDED, provider=provider,
                                 message=f"max_cost_usd is set but {provider}'s model has no price: "
                                         "its cost is unknown"), 0.0
            if committed + worst > ask.max_cost_usd:
                return m.Failure(kind=m.BUDGET_EXCEEDED, provider=provider,
                                 message=f"max_cost_usd ${ask.max_cost_usd:.6f}: spent and in flight "
                                         f"${committed:.6f} + worst case of {provider} ${worst:.6f} "
                                         "would exceed it"), 0.0
        if not self.applies(ask):
            return None, worst or 0.0
        worst = self.worst_case(provider, ask) if worst is None else worst
        left = deadline - now()
        reply = await self.rpc.service(
            COST_RESERVE,
            m.Reserve(call_id=call_id, ask_id=ask.id, amount_usd=worst or 0.0, user=ask.user, tier=ask.tier,
                      expires_at=time.time() + max(0.0, left)),
            deadline=now() + min(RESERVE_SLICE[0], RESERVE_SLICE[1] * left) if left > 0 else deadline,
            ask_id=ask.id,  # for traces; a reservation that times out cancels nothing (no call id)
        )
        if isinstance(reply, m.Failure):
            if reply.kind == m.BUDGET_EXCEEDED:
                return msgspec.structs.replace(reply, provider=provider), 0.0
            return m.Failure(kind=m.UNAVAILABLE, provider=provider,
                             message=f"the budget of this ask cannot be checked ({reply.kind}: {reply.message})"), 0.0
        return None, worst or 0.0

    async def after(self, ask: m.Ask, call_id: str, cost: float | None) -> None:
        if self.applies(ask):
            await self.rpc.tell(COST_COMMIT, m.Commit(call_id=call_id, actual_usd=cost or 0.0, user=ask.user,
                                                      tier=ask.tier), ask_id=ask.id)
