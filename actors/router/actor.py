"""The router actor: serves ``<root>.ask`` and ``<root>.control.strategy``.

Per ask: check it (``check_ask``: a bad ask is ``bad_request`` naming the problem) → deduplicate by
ask id (a client's retry within ``dedup_window_s`` is answered from the first run, never run twice)
→ the cache (a hit answers; identical asks in flight are coalesced: ``cache_step.py``) → choose the
strategy (the ask's; else the one set live for its tier or for every tier with ``llmbus
set-strategy``, kept in KV; else the config's) and its options (``[router.strategies.<name>]``, then
the ask's ``strategy_options``) → drop providers whose breaker is open (``breakers.py``, a KV
mirror: no round trip) → run the policy on the runner (``actors.strategies.runner``) inside the
ask's deadline, less a small margin so the reply reaches the caller before its own deadline; each
call goes through ``calls.py`` (money checked before it goes out) → reply with an Answer that says
how it was made (route of every call, providers, model, cost), or a typed Failure.
"""

from __future__ import annotations

import asyncio

import msgspec

from bus import codec
from bus import messages as m
from bus import names
from actors import metrics
from bus.deadline import now
from bus.endpoint import Context, Encoded, Endpoint
from bus.rpc import ATTEMPT_HEADER
from bus.subjects import ASK, ASK_STREAM, CONTROL_EXPERIMENT, CONTROL_STRATEGY, PROVIDER_COMPLETE
from actors.router.breakers import BreakerView
from actors.router.budgets import Budgets
from actors.router.cache_step import CacheStep
from actors.router.calls import AskCalls, StreamedCalls, gone
from actors.router.choice import StrategyChoice
from actors.router.dedup import FleetAsks, RecentAsks
from actors.router.experiments import Experiments
from actors.router.live import Live
from actors.router.reliability import ReliabilityView, votes_of
from actors.router.routing import Routing
from actors.router.stream import Relay, serve_stream
from actors.pure.pricing import Pricing
from actors.runtime import Actor
from actors.settings import Settings
from actors.strategies import runner
from actors.strategies.base import Done, OptionsError, Plan, options_for, strategies
from actors.strategies.runner import Outcome

ROLES = frozenset({"system", "user", "assistant", "tool"})


def reply_margin_s(budget_s: float) -> float:
    """Time kept back from the ask's budget for the reply to travel: 5 ms + 2 %, at most 50 ms."""
    return min(0.05, 0.005 + 0.02 * budget_s)


def check_ask(ask: m.Ask) -> m.Failure | None:
    """A Failure(bad_request) naming what is wrong with ``ask``, or None."""
    if not names.is_label(ask.id):  # it travels in a header and in subjects: checked at the edge
        return m.Failure(kind=m.BAD_REQUEST, message=names.problem(ask.id, "the ask id", "label"))
    for value, what, kind in ((ask.tier, "tier", "token"), (ask.cache_namespace, "cache_namespace", "token"),
                              (ask.user, "user", "label"), (ask.strategy, "strategy", "token")):
        if value is not None and (bad := names.problem(value, what, kind)) is not None:
            return m.Failure(kind=m.BAD_REQUEST, message=bad)
    if not ask.messages:
        return m.Failure(kind=m.BAD_REQUEST, message="the ask has no messages")
    for i, msg in enumerate(ask.messages):
        if msg.role not in ROLES:
            return m.Failure(kind=m.BAD_REQUEST, message=f"messages[{i}] has unknown role {msg.role!r} "
                                                         f"(known: {', '.join(sorted(ROLES))})")
    if ask.budget_ms is not None and ask.budget_ms <= 0:
        return m.Failure(kind=m.BAD_REQUEST, message=f"budget_ms must be above 0 (got {ask.budget_ms})")
    return None


class Router(Actor):
    kind = "router"
    description = "routes asks to providers by strategy"

    def __init__(self, *, settings: Settings, **kw) -> None:
        kw.setdefault("max_concurrency", settings.router.max_concurrency)
        kw.setdefault("max_queued", settings.router.max_queued)  # full: asks wait, best priority first
        kw.setdefault("default_budget_ms", settings.bus.default_budget_ms)
        kw.setdefault("stop_grace_s", settings.bus.stop_grace_s)
        super().__init__(**kw)
        self.settings = settings
        self.order = settings.provider_order()
        self.recent = RecentAsks(window_s=settings.router.dedup_window_s, max_kept=settings.router.dedup_max)
        self.fleet = FleetAsks(self.recent, self.subjects, lambda: self.nc)  # a retry asks the other routers
        self.breakers: BreakerView | None = None
        self.live = Live()  # latency estimates and the hedge budget, shared by this router's asks
        self.budgets: Budgets | None = None
        self.policies = strategies()
        # each strategy's options from the config, converted once (an ask's overrides go on top)
        self.options = {name: options_for(cls, settings.router.strategies.get(name, {}))
                        for name, cls in self.policies.items()}
        self.choice = StrategyChoice(self, configured=settings.router.strategy)
        self.reliability: ReliabilityView | None = None  # consensus weights shared in KV (reliability.py)
        self.routing = Routing(self)  # tiers, presets, fallback routes (actors.router.routing)
        self.experiments = Experiments(self)  # rollout, A/B, shadow (actors.router.experiments)
        self._unpriced: set[tuple[str, str]] = set()
        self.complete_subjects: dict[str, str] = {}  # provider -> its complete subject
        path = settings.pricing_path() if settings.cost.enabled else None
        self.pricing = Pricing.load(path) if path is not None else None
        self.live.price_providers(settings, self.pricing)
        # the cache step (actors.router.cache_step): lookup, coalescing of identical asks, store
        self.cache = CacheStep(self, settings, order=self.order, margin=reply_margin_s) if settings.cache.enabled else None
        self.index_asks = settings.recording() == "all"  # mark each ask's start in the recording

    async def setup(self) -> None:
        mode = self.settings.recording()
        if mode != "off":  # the recording stream (llmbus trace/replay), before any ask
            from bus.streams import ensure_record_stream, retrying

            r = self.settings.record
            await retrying(lambda: ensure_record_stream(self.nc, self.subjects, max_age_s=r.max_age_s,
                                                        max_bytes=r.max_bytes, errors_only=mode == "window"),
                           deadline=now() + 30.0)

    def background(self):
        jobs = [self.fleet.run, self.choice.run, self._watch_reliability]
        jobs += [self._watch_breakers, self._watch_latency] if self.settings.health.enabled else []
        jobs += [self.experiments.run] if self.experiments.active else []
        jobs += [self._record_errors] if self.settings.recording() == "window" else []
        return jobs + ([self._watch_budgets] if self.settings.cost.enabled else [])

    async def _record_errors(self, *, task_status) -> None:
        from actors.recorder import ErrorRecorder

        await ErrorRecorder(self.nc, self.subjects, sampling_for=self.settings.sampling_for).run(task_status=task_status)

    async def _watch_reliability(self, *, task_status) -> None:
        self.reliability = ReliabilityView(self.nc, self.subjects, self.log)
        self.live.reliability = self.reliability.shared
        await self.reliability.run(task_status=task_status)

    async def _watch_budgets(self, *, task_status) -> None:
        self.budgets = Budgets(self.nc, self.rpc, self.subjects, self.settings, self.pricing)
        await self.budgets.run(task_status=task_status)

    async def _watch_breakers(self, *, task_status) -> None:
        self.breakers = BreakerView(self.nc, self.subjects, stale_after_s=self.settings.health.cooldown_s)
        await self.breakers.run(task_status=task_status)

    async def _watch_latency(self, *, task_status) -> None:
        await self.live.watch(self.nc, self.subjects, task_status=task_status)

    async def on_reconnect(self) -> None:
        for view in (self.breakers, self.budgets, self.choice, self.live, self.reliability, self.experiments):
            if view is not None and view.mirror is not None:
                view.mirror.restart()  # the server may have lost the watch's ephemeral consumer

    def endpoints(self) -> list[Endpoint]:
        asks = Endpoint.serving(ASK, self.subjects, self._serve_ask)
        streams = Endpoint.serving(ASK_STREAM, self.subjects, self._serve_stream)
        asks.priority = streams.priority = self.priority_of  # a full router serves the higher first
        return [
            asks,
            streams,
            Endpoint.serving(CONTROL_STRATEGY, self.subjects, self.choice.serve),
            Endpoint.serving(CONTROL_EXPERIMENT, self.subjects, self.experiments.serve),
        ]

    async def ask(self, ask: m.Ask, ctx: Context) -> m.Answer | m.Failure:
        reply = await self._serve_ask(ask, ctx)
        return reply.value if type(reply) is Encoded else reply

    async def _serve_ask(self, ask: m.Ask, ctx: Context) -> m.Answer | m.Failure | Encoded:
        """The reply; encoded when it is kept for the ask id's retries (encoded once: kept and sent)."""
        bad = check_ask(ask)
        if bad is not None:
            return bad
        route = self.route
        own = ask  # as it came: an experiment leaves an ask that names its own strategy alone
        if self.routing.applies(ask):  # a preset, a tier, a switch: the ask's routing fields rewritten
            ask = self.routing.prepare(ask)
            if type(ask) is m.Failure:
                return ask
            route = self.routing.runner(ask, route, named=own.strategy is not None)  # the tier's fallback routes
        if self.experiments.active:  # [experiments.*]: the arm, a variant, a shadow beside
            ask, route = self.experiments.apply(own, ask, route)
        seen = self.recent.lookup(ask.id)
        if seen is not None:
            return await asyncio.shield(seen) if isinstance(seen, asyncio.Future) else seen
        if ctx.headers and ATTEMPT_HEADER in ctx.headers:  # a retry: another router may run it (dedup.py)
            held = await self.fleet.find(ask.id, ctx.deadline - reply_margin_s(ctx.deadline - now()))
            if held is not None:
                return held
            seen = self.recent.lookup(ask.id)  # a retry of our own may have started it meanwhile
            if seen is not None:
                return await asyncio.shield(seen) if isinstance(seen, asyncio.Future) else seen
        self.recent.start(ask.id)
        if self.index_asks:  # the ask's start in the recording: `llmbus trace` finds it in one lookup
            await self.nc.publish(self.subjects.recorded_index(ask.id), b"")
        result: m.Answer | m.Failure = m.Failure(kind=m.CANCELLED, message="the ask was cancelled")
        cache = self.cache
        try:
            if cache is None or cache.bypassed(ask):
                result = await route(ask, ctx)
            else:
                result = await cache.run(ask, ctx, route)
        finally:
            kept = self.recent.finish(ask.id, result)
            metrics.asked(getattr(result, "strategy", None) or self.strategy_for(ask), ask.tier, result, now() - ctx.arrival)
            if self.fleet.waiting:  # other routers wait for this ask's result (a retry reached them)
                await self.fleet.finished(ask.id, result, kept)
        return result if kept is None else Encoded(result, kept)

    def priority_of(self, msg) -> int:
        """An ask's rank when this router is full (``actors.admission``): ``Ask.priority``, else its
        tier's ``priority``, else 0. Decoded only then: a router with room never pays for it."""
        ask = codec.ask.decode(msg.data)
        if ask.priority is not None:
            return ask.priority
        tier = self.settings.tiers.get(ask.tier) if ask.tier is not None else None
        return tier.priority if tier is not None else 0

    def _serve_stream(self, ask: m.Ask, ctx: Context):
        return serve_stream(self, ask, ctx)

    def strategy_for(self, ask: m.Ask) -> str:
        return ask.strategy or self.choice.for_tier(ask.tier)

    async def route(self, ask: m.Ask, ctx: Context, relay: Relay | None = None) -> m.Answer | m.Failure:
        strategy = self.strategy_for(ask)
        cls = self.policies.get(strategy)
        if cls is None:
            return m.Failure(kind=m.BAD_REQUEST,
                             message=f"unknown strategy {strategy!r}; this router knows: {', '.join(self.policies)}")
        options = self.options[strategy]
        if ask.strategy_options:
            try:
                options = options_for(cls, msgspec.structs.asdict(options), ask.strategy_options)
            except OptionsError as exc:
                return m.Failure(kind=m.BAD_REQUEST, message=str(exc))
        order = ask.providers or self.order  # self.order: configured providers only, checked at start
        unknown = [p for p in order if p not in self.settings.providers] if ask.providers else []
        if unknown or not order:
            return m.Failure(
                kind=m.BAD_REQUEST,
                message=f"unknown provider(s) {', '.join(unknown) or '(none given)'}; "
                f"configured: {', '.join(self.settings.providers)}",
            )
        skipped: list[m.Step] = []
        if self.breakers is not None and self.breakers.states:  # no state yet: every breaker is closed
            order, skipped = await self.breakers.screen(order)
            if not order:
                return m.Failure(
                    kind=m.NO_HEALTHY_PROVIDER,
                    message="no provider may be called now: " + "; ".join(f"{s.provider} {s.detail}" for s in skipped),
                    route=skipped,
                )
        deadline = ctx.deadline - reply_margin_s(ctx.deadline - now())
        calls = AskCalls(self, ask, strategy) if relay is None else StreamedCalls(self, ask, strategy, relay)
        outcome = await runner.run(cls(Plan(ask, order, options, deadline, self.live)), calls, deadline=deadline, clock=now)
        if outcome.done.result.__class__ is m.Failure and outcome.done.result.kind == m.INTERNAL:
            self.log.error("strategy_failed", strategy=strategy, ask_id=ask.id, message=outcome.done.result.message)
        elif self.reliability is not None and "consensus" in outcome.done.metadata:  # for `llmbus feedback`
            self.reliability.remember(ask.id, votes_of(outcome.records, outcome.done.metadata["consensus"]))
        return finish(ask, strategy, outcome, skipped, calls.cost_usd)

    def complete_subject(self, provider: str) -> str:
        subject = self.complete_subjects[provider] = PROVIDER_COMPLETE.subject(self.subjects, provider)
        return subject

    def warn_unpriced(self, provider: str, model: str) -> None:
        if (provider, model) not in self._unpriced:
            self._unpriced.add((provider, model))  # say it once, not per ask
            self.log.warning("unpriced_model", provider=provider, model=model,
                             hint="add it to config/pricing.toml: its cost is reported as unknown")

    async def report_gone(self, provider: str) -> None:
        await self.nc.publish(self.subjects.outcome(provider), gone(provider))


def route_of(outcome: Outcome) -> list[m.Step]:
    return [
        m.Step(
            provider=r.call.target,
            outcome=r.outcome,
            ms=r.ms if r.ms is not None else 0.0,
            detail=r.result.message if isinstance(r.result, m.Failure) else None,
            call_id=r.call_id,
            purpose=None if r.call.purpose == "answer" else r.call.purpose,
        )
        for r in outcome.records
    ]


def finish(
    ask: m.Ask, strategy: str, outcome: Outcome, skipped: list[m.Step] = (), cost_usd: float | None = 0.0
) -> m.Answer | m.Failure:
    """The reply to ``ask``: an Answer that says how it was made (providers skipped first, then every
    call), or the Failure with the same route."""
    done: Done = outcome.done
    route = [*skipped, *route_of(outcome)]
    result = done.result
    if isinstance(result, m.Failure):
        return msgspec.structs.replace(result, route=route)
    usage = [r.result.usage for r in outcome.records if isinstance(r.result, m.Completion)]
    total = usage[0] if len(usage) == 1 else m.TokenUsage(
        input_tokens=sum(u.input_tokens for u in usage),
        output_tokens=sum(u.output_tokens for u in usage),
        cached_tokens=sum(u.cached_tokens for u in usage),
    )
    return m.Answer(
        id=ask.id,
        text=result.text,
        data=result.data,
        confidence=done.confidence if done.confidence is not None else result.confidence,
        providers=done.providers if done.providers is not None else [result.provider],
        usage=total,
        cost_usd=cost_usd,
        route=route,
        metadata=done.metadata,
        model=result.model,
        tool_calls=result.tool_calls,
        strategy=strategy,
    )
