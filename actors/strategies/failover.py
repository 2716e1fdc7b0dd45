"""Failover: try providers in order; move on when a failure kind says another may succeed.

Pure part: ``next_step(order, replies, …) -> Next | Done``. Rules, in order:
1. the last call answered → done;
2. its failure kind is not one to fail over on (e.g. ``bad_request``) → done with that failure;
3. it was ``rate_limited`` with a ``retry_after_s`` that fits the remaining budget, and this
   provider was tried only once → call the same provider again after that delay;
4. no provider left → ``all_failed`` naming what each did; no time left → ``timeout``;
5. otherwise call the next provider, keeping ``reserve`` of the remaining budget for the
   providers after it (the last one gets everything left).

A call with providers after it also ends at ``attempt_p95`` × the provider's live p95 (from the
health actor, ``Plan.live``) + ``attempt_floor_s`` when that comes first: a dead copy of the
provider (a request delivered to a process killed before it answered) or a stall costs that much,
not the provider's whole share. Not for streamed asks (a long stream is not a stall); nothing is
looked up while no p95 is known, and ``attempt_p95 = 0`` turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from bus import messages as m
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, Wake, WakeAt, register

# Below this much time a call cannot usefully start (publish + a reply hop on loopback).
MIN_CALL_S = 0.001


class FailoverOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # failure kinds that move on to the next provider; any other kind ends the ask at once
    on: list[str] = msgspec.field(
        default_factory=lambda: [m.TIMEOUT, m.RATE_LIMITED, m.OVERLOADED, m.UNAVAILABLE, m.INTERNAL]
    )
    # fraction of the remaining budget kept back for the providers after the current one
    reserve: float = 0.3
    # retry the same provider once when it says rate_limited with a retry_after_s that fits
    retry_same_provider: bool = True
    # a call with providers after it ends at attempt_p95 × the provider's live p95 + attempt_floor_s
    # when that is sooner than its share (a dead copy or a stall); 0: calls get their share
    attempt_p95: float = 4.0
    attempt_floor_s: float = 0.25

    def __post_init__(self) -> None:
        unknown = [k for k in self.on if k not in m.FAILURE_KINDS]
        if unknown:
            raise ValueError(f"`on` has unknown failure kind(s) {', '.join(map(repr, unknown))}")
        if not 0.0 <= self.reserve < 1.0:
            raise ValueError("`reserve` must be in [0, 1)")
        if self.attempt_p95 < 0 or self.attempt_floor_s < 0:
            raise ValueError("`attempt_p95` and `attempt_floor_s` must be 0 or more")


@dataclass(frozen=True, slots=True)
class Next:
    """Call ``provider`` (after waiting ``delay_s``) with the call ending at ``deadline``."""

    provider: str
    deadline: float
    delay_s: float = 0.0


def next_step(
    order: Sequence[str], replies: Sequence[Reply], *, now: float, deadline: float, options: FailoverOptions,
    p95_ms: Mapping[str, float] | None = None,
) -> Next | Done:
    """``p95_ms``: the providers' live p95 latency (ms), for the attempt deadline (None: none)."""
    if replies:
        last = replies[-1]
        if not isinstance(last.result, m.Failure):
            return Done(last.result)
        failure = last.result
        if failure.kind not in options.on:
            return Done(failure)
        if (
            options.retry_same_provider
            and failure.kind == m.RATE_LIMITED
            and failure.retry_after_s is not None
            and sum(1 for r in replies if r.target == last.target) == 1
            and now + failure.retry_after_s + MIN_CALL_S < deadline
        ):
            start = now + failure.retry_after_s
            rest = _untried(order, replies)
            call_deadline = _call_deadline(start, deadline, bool(rest), options, last.target, p95_ms)
            return Next(last.target, call_deadline, failure.retry_after_s)
    rest = _untried(order, replies)
    if not rest:
        if len(replies) == 1:
            return Done(replies[0].result)
        return Done(m.Failure(kind=m.ALL_FAILED, message=f"every provider failed ({summary(replies)})"))
    if deadline - now < MIN_CALL_S:
        return Done(m.Failure(kind=m.TIMEOUT, message=f"budget spent before trying {rest[0]} ({summary(replies)})"))
    return Next(rest[0], _call_deadline(now, deadline, len(rest) > 1, options, rest[0], p95_ms))


def summary(replies: Sequence[Reply]) -> str:
    return ", ".join(f"{r.target}: {'ok' if r.ok else r.result.kind}" for r in replies) or "no provider was called"


def _untried(order: Sequence[str], replies: Sequence[Reply]) -> list[str]:
    tried = {r.target for r in replies}
    return [p for p in order if p not in tried]


def _call_deadline(start: float, deadline: float, more_after: bool, options: FailoverOptions, provider: str,
                   p95_ms: Mapping[str, float] | None) -> float:
    if not more_after:
        return deadline
    share = start + (deadline - start) * (1.0 - options.reserve)
    if p95_ms and options.attempt_p95:
        p95 = p95_ms.get(provider)
        if p95 is not None:
            return min(share, start + options.attempt_p95 * p95 / 1000.0 + options.attempt_floor_s)
    return share


@register
class Failover(Policy):
    name = "failover"
    description = "providers in order; the next one when a failure kind says it may succeed"
    Options = FailoverOptions

    def __init__(self, plan) -> None:
        super().__init__(plan)
        self.waiting: Next | None = None  # a retry after the provider's Retry-After

    def begin(self, now: float) -> list[Action]:
        return self._next(now)

    def decide(self, event: Event, now: float) -> list[Action]:
        kind = type(event)
        if kind is Reply:
            return self._next(now)
        if kind is Wake and self.waiting is not None:
            step, self.waiting = self.waiting, None
            return [self._call(step)]
        if kind is Deadline:
            return [Done(m.Failure(kind=m.TIMEOUT, message=f"budget spent ({summary(self.replies)})"))]
        return []

    def _next(self, now: float) -> list[Action]:
        plan = self.plan
        live = plan.live
        step = next_step(plan.candidates, self.replies, now=now, deadline=plan.deadline, options=self.options,
                         p95_ms=live.p95_ms if live is not None and not plan.ask.stream else None)
        if type(step) is Done:
            return [step]
        if step.delay_s:
            self.waiting = step
            return [WakeAt(now + step.delay_s)]
        return [self._call(step)]

    def _call(self, step: Next) -> Call:
        return Call(str(len(self.replies)), step.provider, deadline=step.deadline)
