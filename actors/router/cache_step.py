"""The router's cache step: answer from the cache, or make the answer once for every identical ask
in flight, and keep it.

``Router.ask`` hands each ask to ``CacheStep.run(ask, ctx, route)``:

1. ``cache="skip"``, or no cache actor answered lately → ``route`` runs as if there were no cache.
2. ``cache="use"``: the key (``actors.router.cache_key``) is looked up in the cache actor within a slice
   of the ask's budget, ``min(lookup_ms, lookup_share × time left)`` — 50 ms or 5 % by default.
   An idle lookup takes ~0.3 ms, but 50 identical asks at once on a fresh one-process stack
   queued lookups for up to ~18 ms (measured), and a lookup that times out sends its ask to a
   provider, which costs money: 50 ms keeps bursts cached, while a dead or slow cache still costs
   an ask at most 50 ms, or a twentieth of a tight budget. A hit is the answer: ``cached=True``,
   ``cost_usd=0``, ``metadata["cost_saved_usd"]`` = the stored answer's cost, and a route of one
   step, ``cache hit``. A lookup that fails (timeout, no responders, …) → the ask runs uncached:
   no coalescing, no store. No responders also marks the cache absent for ``absent_retry_s``, so
   a stack without a cache actor pays one round trip a second, not one an ask.
3. A miss, or ``cache="refresh"``, joins the flight of its key (``actors.router.flights``): one ask per
   key runs ``route`` at a time, fleet-wide; the others get its Answer (``cached=True``,
   ``metadata["cache"] = "coalesced"``, route ``cache coalesced``) or its Failure.
4. The ask that ran ``route`` stores its answer when it is worth keeping (``worth_keeping``).

Every cache call (lookup, store, lease operation) gets that slice and carries the ask id (for
traces); one that times out cancels nothing (``bus.rpc``: only calls with a call id send a Cancel).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from bus import messages as m
from bus.deadline import now
from bus.endpoint import Context
from bus.subjects import CACHE_COALESCED, CACHE_GET, CACHE_PUT
from bus.rpc import elapsed_ms
from actors import metrics
from actors.router.cache_key import cache_key
from actors.router.flights import COALESCED, HIT, MADE, Flights
from actors.settings import Settings

if TYPE_CHECKING:
    from actors.router.actor import Router

Route = Callable[[m.Ask, Context], Awaitable[m.Answer | m.Failure]]


def worth_keeping(result: m.Answer | m.Failure, min_confidence: float) -> bool:
    """Only a final, non-empty Answer that was made (not itself served from the cache), with a
    confidence of at least ``min_confidence`` — an unknown confidence passes only a floor of 0."""
    if not isinstance(result, m.Answer) or result.cached or result.stage != "final":
        return False
    if not result.text and result.data is None:
        return False
    quality = result.metadata.get("quality") if result.metadata else None
    if isinstance(quality, dict) and quality.get("target") is not None and (quality.get("score") or 0.0) < quality["target"]:
        return False  # a reviewed answer is kept only at or above its tier's quality target
    if result.confidence is None:
        return min_confidence <= 0.0
    return result.confidence >= min_confidence


def served(answer: m.Answer, ask: m.Ask, how: str, started: float) -> m.Answer:
    """``answer`` (made for another ask) as the answer to ``ask``: nothing was spent for it."""
    saved = answer.metadata.get("cost_saved_usd") if answer.cached else answer.cost_usd
    return msgspec.structs.replace(
        answer, id=ask.id, cached=True, cost_usd=0.0,
        route=[m.Step(provider="cache", outcome=how, ms=elapsed_ms(started))],
        metadata={**answer.metadata, "cache": how, "cost_saved_usd": saved},
    )


class CacheStep:
    def __init__(self, actor: Router, settings: Settings, *, order: list[str], margin: Callable[[float], float]) -> None:
        self.actor = actor
        self.settings = settings
        self.config = settings.cache
        self.order = order  # the router's provider order, for asks that name none
        self.margin = margin  # the router's reply margin for a budget (s → s)
        self.flights = Flights(lambda: actor.nc, actor.subjects, owner=actor.id,
                               lease_s=self.config.lease_s, retry_s=self.config.absent_retry_s)
        self._absent_until = 0.0
        # hit, miss, made, coalesced, stored; bypassed (skip, or cache absent); uncached (lookup failed)
        self.counts: Counter[str] = Counter()

    def bypassed(self, ask: m.Ask) -> bool:
        """True (and counted) when ``ask`` skips the cache: it says so, or no cache actor answered lately."""
        if ask.cache == "skip" or now() < self._absent_until:
            self.counts["bypassed"] += 1
            return True
        return False

    async def run(self, ask: m.Ask, ctx: Context, route: Route) -> m.Answer | m.Failure:
        if self.bypassed(ask):
            return await route(ask, ctx)
        started = now()
        namespace = ask.cache_namespace or self.config.default_namespace
        key = cache_key(ask, namespace=namespace, strategy=self.actor.strategy_for(ask),
                        providers=ask.providers or self.order)
        if ask.cache != "refresh":
            found = await self._lookup(key, namespace, ask.id, ctx.deadline, count=True)
            if isinstance(found, m.Failure):
                self.counts["uncached"] += 1
                return await route(ask, ctx)
            if found is not None:
                self.counts[HIT] += 1
                metrics.cache(HIT)
                return served(found, ask, HIT, started)
            self.counts["miss"] += 1
            metrics.cache("miss")

        async def make() -> m.Answer | m.Failure:
            result = await route(ask, ctx)
            if worth_keeping(result, self.config.min_confidence):
                await self._store(key, namespace, result, ask.id, ctx.deadline)
            return result

        async def look() -> m.Answer | None:  # a new flight leader's second look: counted once already
            found = await self._lookup(key, namespace, ask.id, ctx.deadline, count=False)
            return found if isinstance(found, m.Answer) else None

        result, how = await self.flights.run(
            key, deadline=ctx.deadline - self.margin(ctx.deadline - now()), op_s=self._slice_s(ctx.deadline),
            make=make, look=None if ask.cache == "refresh" else look,
        )
        self.counts[how] += 1
        if how != MADE:
            metrics.cache(how)
        if how == MADE:
            return result
        if how == COALESCED:
            await self.actor.rpc.tell(CACHE_COALESCED, m.CacheCoalesced(namespace=namespace), ask_id=ask.id)
        return served(result, ask, how, started) if isinstance(result, m.Answer) else result

    def _slice_s(self, deadline: float) -> float:
        return min(self.config.lookup_ms / 1000.0, self.config.lookup_share * max(0.0, deadline - now()))

    async def _lookup(self, key: str, namespace: str, ask_id: str, deadline: float, *,
                      count: bool) -> m.Answer | m.Failure | None:
        """The stored answer, None on a miss, or the Failure of the lookup."""
        got = await self.actor.rpc.service(CACHE_GET, m.CacheGet(key=key, namespace=namespace, count=count),
                                           deadline=now() + self._slice_s(deadline), ask_id=ask_id)
        if isinstance(got, m.Failure):
            if got.kind == m.UNAVAILABLE:  # no cache actor: do not ask again for a while
                self._absent_until = now() + self.config.absent_retry_s
            self.actor.log.debug("cache_lookup_failed", kind=got.kind, message=got.message)
            return got
        return got.answer if isinstance(got, m.CacheEntry) else None

    async def _store(self, key: str, namespace: str, answer: m.Answer, ask_id: str, deadline: float) -> None:
        got = await self.actor.rpc.service(CACHE_PUT, m.CachePut(key=key, namespace=namespace, answer=answer),
                                           deadline=now() + self._slice_s(deadline), ask_id=ask_id)
        if isinstance(got, m.CacheStored):
            self.counts["stored"] += 1
            metrics.cache("stored")
        else:
            self.actor.log.debug("cache_store_failed", kind=got.kind, message=got.message)
