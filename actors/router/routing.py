"""Tiers, presets and fallback routes: what an ask gets before any policy runs.

``prepare(ask)`` rewrites the ask's routing fields from its preset (``labels["preset"]``) and its
tier (``[tiers.<name>]``): strategy, candidates, options, cost ceiling, cache namespace — the ask's
own fields win, and a strategy set live for the tier (``llmbus set-strategy --tier``) wins over the
tier's configured one. ``LLMBUS_MULTI_LLM[_<TIER>]=0`` turns orchestration off: plain ``single``.

``run(ask, ctx, route_one)``: a tier with ``fallback_routes`` and routes runs the first route whose
providers all have a closed breaker (the router's KV view: no round trip), then the next when a
route fails at run time, each with a share of the time left. A ``rules`` route calls a Python
function instead of any model (``metadata.degraded = true``). The answer says which route answered
(``metadata.route_name``) and its route lists the steps of every route tried; ``uses`` counts the
answers per (tier, route).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context
from actors import metrics
from actors.pure import breaker as br
from actors.routing_settings import RouteSettings, TierSettings, multi_llm

if TYPE_CHECKING:
    from actors.router.actor import Router

RouteOne = Callable[[m.Ask, Context], Awaitable[m.Answer | m.Failure]]
ROUTE_SHARE = 0.5  # a route that is not the last gets at most this share of the time left


def load_rules(spec: str) -> Callable[[m.Ask], Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class Routing:
    def __init__(self, router: Router) -> None:
        settings = router.settings
        self.router = router
        self.tiers: dict[str, TierSettings] = settings.tiers
        self.presets = settings.presets()
        self.multi_all = multi_llm(None)
        self.multi = {t: multi_llm(t) for t in self.tiers}
        self.rules = {r.rules: load_rules(r.rules) for t in self.tiers.values() for r in t.routes if r.rules}
        self.uses: Counter = Counter()  # (tier, route name) -> answers
        self.idle = not (self.tiers or self.presets) and self.multi_all

    def applies(self, ask: m.Ask) -> bool:
        return not self.idle and (ask.tier is not None or bool(ask.labels) or not self.multi_all)

    # --- before dispatch ---------------------------------------------------------------------
    def prepare(self, ask: m.Ask) -> m.Ask | m.Failure:
        changes: dict[str, Any] = {}
        options: dict[str, Any] = {}
        name = ask.labels.get("preset") if ask.labels else None
        if name is not None:
            preset = self.presets.get(name)
            if preset is None:
                return m.Failure(kind=m.BAD_REQUEST, message=f"unknown preset {name!r}; known: "
                                                             f"{', '.join(self.presets) or '(none)'}")
            changes["strategy"] = preset.strategy
            if preset.providers and not ask.providers:
                usable = [p for p in preset.providers if p in self.router.order]
                changes["providers"] = usable or None
            if ask.strategy in (None, preset.strategy):  # options of the preset's strategy, not another's
                options.update(preset.options)
            if ask.cache == "use" and preset.cache != "use":
                changes["cache"] = preset.cache
            if ask.budget_ms is None and preset.budget_ms is not None:
                changes["budget_ms"] = preset.budget_ms
        tier = self.tiers.get(ask.tier) if ask.tier is not None else None
        if tier is not None:
            if "strategy" not in changes and tier.strategy is not None and ask.tier not in self.router.choice.tiers:
                changes["strategy"] = tier.strategy
            if not ask.providers and "providers" not in changes and (tier.providers or tier.retries is not None):
                changes["providers"] = tier.candidates(self.router.order)
            if ask.strategy in (None, tier.strategy):  # options of the tier's strategy, not another's
                options = {**tier.options, **options}
            if tier.supervision and changes.get("strategy", ask.strategy) == "review":
                options.setdefault("cycles", tier.supervision)  # the tier's supervision depth
            if tier.max_cost_usd is not None and (ask.max_cost_usd is None or tier.max_cost_usd < ask.max_cost_usd):
                changes["max_cost_usd"] = tier.max_cost_usd
            if tier.cache == "dedicated" and ask.cache_namespace is None:
                changes["cache_namespace"] = f"tier-{ask.tier}"
        on = self.multi.get(ask.tier, self.multi_all) if ask.tier is not None else self.multi_all
        if not on:
            changes["strategy"], options = "single", {}
        if ask.strategy is not None:
            changes.pop("strategy", None)
        if options and changes.get("strategy", ask.strategy) is not None:
            changes["strategy_options"] = {**options, **ask.strategy_options}
        if not changes:
            return ask
        return msgspec.structs.replace(ask, **changes)

    # --- fallback routes ------------------------------------------------------------------------
    def routes_for(self, ask: m.Ask) -> list[RouteSettings]:
        tier = self.tiers.get(ask.tier) if ask.tier is not None else None
        if tier is None or not tier.fallback_routes or not self.multi.get(ask.tier, True):
            return []
        return tier.routes

    def runner(self, ask: m.Ask, route_one: RouteOne, *, named: bool = False) -> RouteOne:
        """``route_one`` itself, or the tier's fallback routes around it. ``named``: the ask as it
        came named its strategy, which then runs on every route (a route gives its providers only)."""
        routes = self.routes_for(ask)
        if not routes:
            return route_one
        return lambda ask, ctx: self.run(ask, ctx, routes, route_one, named)

    def usable(self, route: RouteSettings) -> list[str]:
        """The route's providers that this router may call (none listed: the router's order)."""
        order = self.router.order
        return [p for p in route.providers if p in order] if route.providers else list(order)

    def healthy(self, providers: list[str]) -> bool:
        view = self.router.breakers
        if view is None or not view.states:
            return True
        at = view.clock()
        for p in providers:
            state = view.states.get(p)
            if state is not None and br.effective(state, at).state != br.CLOSED:
                return False
        return True

    async def run(self, ask: m.Ask, ctx: Context, routes: list[RouteSettings], route_one: RouteOne,
                  named: bool = False):
        usable = {r.name: self.usable(r) for r in routes}
        order = [r for r in routes if r.rules or (usable[r.name] and self.healthy(usable[r.name]))]
        skipped = [r.name for r in routes if r not in order]
        tried: list[dict] = []
        steps: list[m.Step] = []
        result: m.Answer | m.Failure = m.Failure(kind=m.NO_HEALTHY_PROVIDER, message="no route to run")
        for i, route in enumerate(order):
            last = i == len(order) - 1
            if route.rules:
                result = self._rules(ask, route)
            else:
                if named:  # the ask's own strategy and options, on the route's providers
                    sub = msgspec.structs.replace(ask, providers=usable[route.name])
                else:  # the route's, not the tier's
                    sub = msgspec.structs.replace(ask, strategy=route.strategy, providers=usable[route.name],
                                                  strategy_options=route.options)
                left = ctx.deadline - now()
                sub_ctx = ctx if last else dataclasses.replace(ctx, deadline=now() + left * ROUTE_SHARE)
                result = await route_one(sub, sub_ctx)
            steps += result.route
            if isinstance(result, m.Answer):
                break
            tried.append({"route": route.name, "failure": result.kind})
            if result.kind == m.BAD_REQUEST or ctx.deadline - now() <= 0.001:
                break
        else:
            route = None
        meta = {"tier": ask.tier, "routes_tried": tried}
        if skipped:
            meta["routes_skipped"] = skipped  # a provider's breaker was not closed
        if isinstance(result, m.Failure):
            message = result.message + " (routes: " + ", ".join(f"{t['route']} {t['failure']}" for t in tried) + ")"
            return msgspec.structs.replace(result, message=message, route=steps)
        self.uses[(ask.tier, route.name)] += 1
        metrics.fallback_route(ask.tier, route.name)
        if route.name != order[0].name or skipped:
            self.router.log.info("fallback_route", tier=ask.tier, route=route.name, tried=len(tried), skipped=skipped)
        meta["route_name"] = route.name
        if route.rules:
            meta["degraded"] = True
        return msgspec.structs.replace(result, route=steps, metadata={**result.metadata, **meta})

    def _rules(self, ask: m.Ask, route: RouteSettings) -> m.Answer | m.Failure:
        started = now()
        try:
            made = self.rules[route.rules](ask)
        except Exception as exc:
            return m.Failure(kind=m.INTERNAL, message=f"rules {route.rules} failed: {type(exc).__name__}: {exc}",
                             route=[m.Step(provider="rules", outcome=m.INTERNAL, ms=0.0, detail=str(exc))])
        step = m.Step(provider="rules", outcome="ok", ms=round((now() - started) * 1000, 3), detail=route.rules)
        text, data = (made, None) if isinstance(made, str) else (json.dumps(made), made)
        return m.Answer(id=ask.id, text=text, data=data, providers=[], route=[step], cost_usd=0.0,
                        strategy="rules", model=route.rules)
