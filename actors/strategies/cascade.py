"""Cascade: the cheapest candidate first; escalate to the next when its answer is not good enough.

Rungs are the candidates in order (cheapest first: a preset or tier lists them so; with
``cheapest_first`` the router's prices reorder them). A rung's answer is accepted unless
- it failed (after ``retries`` more tries of the same rung for a kind failover would move on for),
- the ask has a schema and the answer does not validate against it (``actors.pure.validation``), or
- its confidence is below ``min_confidence`` (no confidence at all counts as below only with
  ``require_confidence``).
Each rung gets the remaining budget less ``reserve`` for the rungs after it. When the last rung is
not good enough either, the best answer seen (valid, highest confidence) is returned, marked
``exhausted``; with none, the failure. ``Answer.metadata.cascade`` lists each rung: provider,
outcome (``accepted`` | ``escalated``), why, confidence.
"""

from __future__ import annotations

import msgspec

from bus import messages as m
from actors.pure.validation import problems
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, register

RETRYABLE = frozenset({m.TIMEOUT, m.RATE_LIMITED, m.OVERLOADED, m.UNAVAILABLE, m.INTERNAL})


class CascadeOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    min_confidence: float = 0.7  # an answer below it escalates
    require_confidence: bool = False  # an answer with no confidence escalates too
    validate: bool = True  # an answer that fails the ask's schema escalates
    retries: int = 0  # more tries of the same rung when it fails with a retryable kind
    reserve: float = 0.3  # share of the remaining budget kept for the rungs after this one
    cheapest_first: bool = False  # order the candidates by the router's prices (unpriced: last, in order)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError("`min_confidence` must be in [0, 1]")
        if not 0.0 <= self.reserve < 1.0:
            raise ValueError("`reserve` must be in [0, 1)")
        if self.retries < 0:
            raise ValueError("`retries` must be 0 or more")


def verdict(result, ask: m.Ask, options: CascadeOptions) -> str | None:
    """Why ``result`` escalates, or None when it is accepted."""
    if isinstance(result, m.Failure):
        return f"failed: {result.kind}"
    if options.validate and ask.schema is not None:
        wrong = problems(result.data, ask.schema, limit=2)
        if wrong:
            return "invalid: " + "; ".join(wrong)
    c = result.confidence
    if c is None:
        return "no confidence" if options.require_confidence else None
    if c < options.min_confidence:
        return f"confidence {c:.2f} < {options.min_confidence:.2f}"
    return None


def rung_order(candidates: list[str], prices: dict[str, float] | None) -> list[str]:
    if not prices:
        return list(candidates)
    inf = float("inf")
    return sorted(candidates, key=lambda p: prices.get(p, inf))  # stable: unpriced keep their order


@register
class Cascade(Policy):
    name = "cascade"
    description = "cheapest first; escalate on failure, invalid output or low confidence"
    Options = CascadeOptions

    def __init__(self, plan) -> None:
        super().__init__(plan)
        live = plan.live
        self.rungs = rung_order(plan.candidates, live.prices if live is not None and self.options.cheapest_first
                                else None)
        self.rung = 0
        self.tries = 0
        self.log: list[dict] = []
        self.best: m.Completion | None = None

    def begin(self, now: float) -> list[Action]:
        return [self._call(now)]

    def decide(self, event: Event, now: float) -> list[Action]:
        if type(event) is Deadline:
            return [self._end("budget spent", m.TIMEOUT)]
        if type(event) is not Reply:
            return []
        result = event.result
        why = verdict(result, self.plan.ask, self.options)
        entry = {"provider": event.target, "outcome": "accepted" if why is None else "escalated"}
        if why is not None:
            entry["why"] = why
        if isinstance(result, m.Completion) and result.confidence is not None:
            entry["confidence"] = result.confidence
        self.log.append(entry)
        if why is None:
            return [Done(result, metadata=self._meta())]
        if isinstance(result, m.Completion) and not why.startswith("invalid"):
            if self.best is None or (result.confidence or 0.0) > (self.best.confidence or 0.0):
                self.best = result
        if isinstance(result, m.Failure) and result.kind in RETRYABLE and self.tries <= self.options.retries:
            entry["outcome"] = "retried"
        else:
            self.rung += 1
            self.tries = 0
        if self.rung >= len(self.rungs) or now >= self.plan.deadline:
            return [self._end("every rung escalated", m.ALL_FAILED)]
        return [self._call(now)]

    def _call(self, now: float) -> Call:
        self.tries += 1
        more = self.rung < len(self.rungs) - 1
        deadline = now + (self.plan.deadline - now) * (1.0 - self.options.reserve) if more else None
        return Call(str(len(self.replies)), self.rungs[self.rung], deadline=deadline)

    def _meta(self, exhausted: bool = False) -> dict:
        meta = {"rungs": self.log}
        if exhausted:
            meta["exhausted"] = True
        return {"cascade": meta}

    def _end(self, message: str, kind: str) -> Done:
        if self.best is not None:
            return Done(self.best, metadata=self._meta(exhausted=True))
        return Done(self.failure(message, kind=kind), metadata=self._meta())
