"""Hedged: call the first candidate; if it has not answered after a delay d, call the next one too.

The first good answer wins; the runner cancels the loser (its route step says ``cancelled``, and
what it spent is still counted). A failure is not waited out: the next candidate is called at once
(a replacement, not an extra call). With one candidate the hedge goes to the same provider again —
its queue group hands it to another copy, which is what rescues a copy that died mid-call.

The delay is ``delay_s`` when set; else the live one (``actors.pure.hedging.delay_s``): the
provider's p95 from the health actor, raised when this router sees more first calls still waiting
than the budget can hedge. Extra calls come from a token bucket (``max_extra`` per ask, at most
``burst``) shared by the router's asks, so hedging never exceeds ``max_extra`` of all calls and
stops by itself when everything is slow. ``Answer.metadata.hedge`` says what happened: the
delay, whether a hedge went out or was refused by the budget, and who won.
"""

from __future__ import annotations

import math

import msgspec

from bus import messages as m
from actors.pure import hedging
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, Wake, WakeAt, register


class HedgedOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    delay_s: float | None = None  # None: the live p95 (adaptive); else this fixed delay
    default_delay_s: float = 0.5  # the delay while no live estimate exists yet
    adaptive: bool = True  # raise the delay so the asks still waiting fit the budget (stalls)
    max_extra: float = 0.05  # hedges per ask, on average (the token bucket's refill)
    burst: float = 5.0  # at most this many hedges banked
    max_hedges: int = 1  # extra calls per ask

    def __post_init__(self) -> None:
        if self.delay_s is not None and self.delay_s < 0:
            raise ValueError("`delay_s` must be 0 or more")
        if not 0.0 <= self.max_extra <= 1.0:
            raise ValueError("`max_extra` must be in [0, 1]")
        if self.burst < 1.0 and self.max_extra > 0:
            raise ValueError("`burst` must be at least 1 (one whole hedge)")
        if self.max_hedges < 0:
            raise ValueError("`max_hedges` must be 0 or more")


@register
class Hedged(Policy):
    name = "hedged"
    description = "the first candidate; after a delay (live p95) the next one too, within a hedge budget"
    Options = HedgedOptions

    def __init__(self, plan) -> None:
        super().__init__(plan)
        self.live = plan.live
        self.calls: list[str] = []  # the provider of each call, by key
        self.started = 0.0
        self.delay = 0.0
        self.hedges = 0
        self.refused = 0
        self.first_seen = False  # the first call's time-to-answer was recorded

    def begin(self, now: float) -> list[Action]:
        opts, first = self.options, self.plan.candidates[0]
        self.started = now
        if opts.delay_s is not None:
            self.delay = opts.delay_s
        else:
            live = self.live
            self.delay = hedging.delay_s(
                live.p95_ms.get(first) if live is not None else None,
                live.first_answer.get(first) if live is not None else None,
                max_extra=opts.max_extra, adaptive=opts.adaptive, default_s=opts.default_delay_s)
        if self.live is not None:
            self.live.hedge.credit(opts.max_extra, opts.burst)
        actions: list[Action] = [self._call(first, now, "answer")]
        if opts.max_hedges and now + self.delay < self.plan.deadline:
            actions.append(WakeAt(now + self.delay))
        return actions

    def decide(self, event: Event, now: float) -> list[Action]:
        kind = type(event)
        if kind is Reply:
            if event.key == "0":
                self._first(now - self.started if event.ok else None)
            if event.ok:
                return [self._done(event.result, event)]
            nxt = self._next()
            if nxt is not None and now < self.plan.deadline:
                return [self._call(nxt, now, "answer")]  # a replacement for a failed call: no token
            if self.open == 0:
                return [Done(self.failure("every hedge failed"), metadata=self._meta(None))]
            return []
        if kind is Wake:
            if self.open == 0 or self.hedges >= self.options.max_hedges:
                return []
            if self.live is not None and not self.live.hedge.take():
                self.refused += 1
                return []
            self.hedges += 1
            actions: list[Action] = [self._call(self._next() or self.plan.candidates[0], now, "hedge")]
            if self.hedges < self.options.max_hedges and now + self.delay < self.plan.deadline:
                actions.append(WakeAt(now + self.delay))
            return actions
        if kind is Deadline:
            self._first(None)
            return [Done(self.failure("no hedge answered in time", kind=m.TIMEOUT), metadata=self._meta(None))]
        return []

    # --- helpers -------------------------------------------------------------------------------
    def _call(self, provider: str, now: float, purpose: str) -> Call:
        key = str(len(self.calls))
        self.calls.append(provider)
        return Call(key, provider, purpose=purpose)

    def _next(self) -> str | None:
        tried = set(self.calls)
        for p in self.plan.candidates:
            if p not in tried:
                return p
        return None

    def _first(self, seconds: float | None) -> None:
        """Record the first call's time to answer (None: it did not answer, counted as infinite)."""
        if self.first_seen or self.live is None or self.options.delay_s is not None:
            return
        self.first_seen = True
        self.live.observe_first(self.calls[0], math.inf if seconds is None else seconds)

    def _done(self, result: m.Completion, event: Reply) -> Done:
        if event.key != "0":
            self._first(None)  # the first call lost: it had not answered by now
        return Done(result, metadata=self._meta(event))

    def _meta(self, winner: Reply | None) -> dict:
        meta = {"delay_ms": round(self.delay * 1000.0, 3), "hedges": self.hedges}
        if self.refused:
            meta["refused"] = self.refused  # the budget had no token when the delay passed
        if winner is not None:
            meta["winner"] = "first" if winner.key == "0" else "hedge"
        return {"hedge": meta}
