"""The router actor: serves ``<root>.ask``.

Per ask: deduplicate by ask id (a client's retry within ``dedup_window_s`` is answered from the
first run, never run twice) → the cache (a hit answers; identical asks in flight are coalesced:
``cache_step.py``) → pick the strategy (the ask's, or the configured default) → drop providers whose
breaker is open (``breakers.py``, a KV mirror: no round trip) → run the strategy inside the ask's
deadline, less a small margin so the reply reaches the caller before its own deadline; before each
provider call the per-ask ceiling and, when a budget applies, a reservation (``budgets.py``) → reply
with an Answer carrying its route and its cost, or a typed Failure.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from bus import codec
from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context, Encoded, Endpoint
from bus.rpc import is_no_responders, new_id
from bus.subjects import ROUTER_QUEUE
from actors.router.breakers import BreakerView
from actors.router.budgets import Budgets
from actors.router.cache_step import CacheStep
from actors.router.dedup import RecentAsks
from actors.pure.pricing import Pricing
from actors.runtime import Actor
from actors.settings import STRATEGIES, Settings
from actors.strategies import failover, single
from actors.strategies.base import Attempt, finish, summary


def reply_margin_s(budget_s: float) -> float:
    """Time kept back from the ask's budget for the reply to travel: 5 ms + 2 %, at most 50 ms."""
    return min(0.05, 0.005 + 0.02 * budget_s)


class Router(Actor):
    kind = "router"
    description = "routes asks to providers by strategy"

    def __init__(self, *, settings: Settings, **kw) -> None:
        kw.setdefault("max_concurrency", settings.router.max_concurrency)
        kw.setdefault("default_budget_ms", settings.bus.default_budget_ms)
        kw.setdefault("stop_grace_s", settings.bus.stop_grace_s)
        super().__init__(**kw)
        self.settings = settings
        self.order = settings.provider_order()
        self.recent = RecentAsks(window_s=settings.router.dedup_window_s, max_kept=settings.router.dedup_max)
        self.breakers: BreakerView | None = None
        self.budgets: Budgets | None = None
        self._unpriced: set[tuple[str, str]] = set()
        path = settings.pricing_path() if settings.cost.enabled else None
        self.pricing = Pricing.load(path) if path is not None else None
        # the cache step (actors.router.cache_step): lookup, coalescing of identical asks, store
        self.cache = CacheStep(self, settings, order=self.order, margin=reply_margin_s) if settings.cache.enabled else None

    def background(self):
        jobs = [self._watch_breakers] if self.settings.health.enabled else []
        return jobs + ([self._watch_budgets] if self.settings.cost.enabled else [])

    async def _watch_budgets(self, *, task_status) -> None:
        self.budgets = Budgets(self.nc, self.rpc, self.subjects, self.settings, self.pricing)
        await self.budgets.run(task_status=task_status)

    async def _watch_breakers(self, *, task_status) -> None:
        self.breakers = BreakerView(self.nc, self.subjects, stale_after_s=self.settings.health.cooldown_s)
        await self.breakers.run(task_status=task_status)

    async def on_reconnect(self) -> None:
        for view in (self.breakers, self.budgets):
            if view is not None:
                view.mirror.restart()  # the server may have lost the watch's ephemeral consumer

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                name="ask",
                subject=self.subjects.ask,
                queue=ROUTER_QUEUE,
                request_type=m.Ask,
                handler=self._serve_ask,
            )
        ]

    async def ask(self, ask: m.Ask, ctx: Context) -> m.Answer | m.Failure:
        return (await self._answer(ask, ctx))[0]

    async def _serve_ask(self, ask: m.Ask, ctx: Context) -> m.Answer | m.Failure | Encoded:
        reply, data = await self._answer(ask, ctx)
        return reply if data is None else Encoded(reply, data)  # encoded once: kept for retries and sent

    async def _answer(self, ask: m.Ask, ctx: Context) -> tuple[m.Answer | m.Failure, bytes | None]:
        """The reply, and its encoding when it is kept for the ask id's retries."""
        seen = self.recent.lookup(ask.id)
        if seen is not None:
            return (await asyncio.shield(seen) if isinstance(seen, asyncio.Future) else seen), None
        self.recent.start(ask.id)
        result: m.Answer | m.Failure = m.Failure(kind=m.CANCELLED, message="the ask was cancelled")
        try:
            result = await (self.cache.run(ask, ctx, self.route) if self.cache is not None else self.route(ask, ctx))
        finally:
            kept = self.recent.finish(ask.id, result)
        return result, kept

    async def route(self, ask: m.Ask, ctx: Context) -> m.Answer | m.Failure:
        strategy = ask.strategy or self.settings.router.strategy
        if strategy not in STRATEGIES:
            return m.Failure(
                kind=m.BAD_REQUEST,
                message=f"unknown strategy {strategy!r}; this router knows: {', '.join(STRATEGIES)}",
            )
        order = ask.providers or self.order
        unknown = [p for p in order if p not in self.settings.providers]
        if unknown or not order:
            return m.Failure(
                kind=m.BAD_REQUEST,
                message=f"unknown provider(s) {', '.join(unknown) or '(none given)'}; "
                f"configured: {', '.join(self.settings.providers)}",
            )
        skipped: list[m.Step] = []
        if self.breakers is not None:
            order, skipped = await self.breakers.screen(order)
            if not order:
                return m.Failure(
                    kind=m.NO_HEALTHY_PROVIDER,
                    message="no provider may be called now: " + "; ".join(f"{s.provider} {s.detail}" for s in skipped),
                    route=skipped,
                )
        deadline = ctx.deadline - reply_margin_s(ctx.deadline - now())
        costs: list[float | None] = []  # one per answered call

        async def call(provider: str, call_deadline: float) -> m.Completion | m.Failure:
            request = m.Complete(
                id=new_id(),
                ask_id=ask.id,
                messages=ask.messages,
                schema=ask.schema,
                tools=ask.tools,
                params=ask.params,
                tier=ask.tier,
                user=ask.user,
                labels=ask.labels,
                strategy=strategy,
            )
            budgets = self.budgets
            if budgets is not None:
                refused = await budgets.before(ask, provider, request.id, sum(c or 0.0 for c in costs), deadline)
                if refused is not None:
                    return refused
            result = await self.rpc.call(
                self.subjects.provider_complete(provider),
                request,
                codec.complete_reply,
                deadline=min(call_deadline, deadline),
                ask_id=ask.id,
                call_id=request.id,
            )
            if isinstance(result, m.Failure) and result.provider is None:
                result = msgspec.structs.replace(result, provider=provider)
                if is_no_responders(result):  # gone: nobody else will report it
                    await self._report_gone(provider)
            if budgets is not None:
                cost = budgets.cost(provider, result) if isinstance(result, m.Completion) else 0.0
                if isinstance(result, m.Completion):
                    costs.append(cost)
                    if cost is None and (provider, result.model) not in self._unpriced:
                        self._unpriced.add((provider, result.model))  # say it once, not per ask
                        self.log.warning("unpriced_model", provider=provider, model=result.model,
                                         hint="add it to config/pricing.toml: its cost is reported as unknown")
                await budgets.after(ask, request.id, cost)
            return result

        # The strategy runs under its own deadline, ahead of the endpoint's, so that even when
        # time runs out the reply is built here and still explains what was tried.
        attempts: list[Attempt] = []
        try:
            async with asyncio.timeout_at(deadline):
                if strategy == "single":
                    result = await single.run(order, call, deadline=deadline, attempts=attempts)
                else:
                    result = await failover.run(
                        order, call, deadline=deadline, attempts=attempts,
                        config=self.settings.router.failover,
                    )
        except TimeoutError:
            result = m.Failure(kind=m.TIMEOUT, message=f"budget spent ({summary(attempts)})")
        cost_usd = None if None in costs else round(sum(costs), 9)
        return finish(ask, result, attempts, skipped, cost_usd=cost_usd)

    async def _report_gone(self, provider: str) -> None:
        outcome = m.Outcome(provider=provider, ok=False, kind=m.UNAVAILABLE, at=time.time(), source="router")
        await self.nc.publish(self.subjects.outcome(provider), codec.encode(outcome))
