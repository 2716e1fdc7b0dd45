"""Failover: try providers in order; move on when a failure kind says another may succeed.

Pure part: ``decide(attempts, …) -> Call | Done``. Rules, in order:
1. the last attempt answered → done;
2. its failure kind is not one to fail over on (e.g. ``bad_request``) → done with that failure;
3. it was ``rate_limited`` with a ``retry_after_s`` that fits the remaining budget, and this
   provider was tried only once → call the same provider again after that delay;
4. no provider left → ``all_failed`` naming what each did; no time left → ``timeout``;
5. otherwise call the next provider, keeping ``reserve`` of the remaining budget for the
   providers after it (the last one gets everything left).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bus import messages as m
from bus.deadline import now as clock
from actors.settings import FailoverSettings
from actors.strategies.base import Attempt, Call, CallProvider, Done, attempt, summary

# Below this much time a call cannot usefully start (publish + a reply hop on loopback).
MIN_CALL_S = 0.001


def decide(
    order: Sequence[str],
    attempts: Sequence[Attempt],
    *,
    now: float,
    deadline: float,
    config: FailoverSettings,
) -> Call | Done:
    if attempts:
        last = attempts[-1]
        if isinstance(last.result, m.Completion):
            return Done(last.result)
        failure = last.result
        if failure.kind not in config.on:
            return Done(failure)
        if (
            config.retry_same_provider
            and failure.kind == m.RATE_LIMITED
            and failure.retry_after_s is not None
            and sum(1 for a in attempts if a.provider == last.provider) == 1
            and now + failure.retry_after_s + MIN_CALL_S < deadline
        ):
            start = now + failure.retry_after_s
            rest = _untried(order, attempts)
            return Call(last.provider, _call_deadline(start, deadline, bool(rest), config), failure.retry_after_s)
    rest = _untried(order, attempts)
    if not rest:
        if len(attempts) == 1:
            return Done(attempts[0].result)
        return Done(
            m.Failure(kind=m.ALL_FAILED, message=f"every provider failed ({summary(list(attempts))})")
        )
    if deadline - now < MIN_CALL_S:
        return Done(
            m.Failure(kind=m.TIMEOUT, message=f"budget spent before trying {rest[0]} ({summary(list(attempts))})")
        )
    return Call(rest[0], _call_deadline(now, deadline, len(rest) > 1, config))


def _untried(order: Sequence[str], attempts: Sequence[Attempt]) -> list[str]:
    tried = {a.provider for a in attempts}
    return [p for p in order if p not in tried]


def _call_deadline(start: float, deadline: float, more_after: bool, config: FailoverSettings) -> float:
    if not more_after:
        return deadline
    return start + (deadline - start) * (1.0 - config.reserve)


async def run(
    order: Sequence[str],
    call: CallProvider,
    *,
    deadline: float,
    config: FailoverSettings,
    attempts: list[Attempt],
) -> m.Completion | m.Failure:
    while True:
        action = decide(order, attempts, now=clock(), deadline=deadline, config=config)
        if isinstance(action, Done):
            return action.result
        if action.delay_s:
            await asyncio.sleep(action.delay_s)
        await attempt(call, action.provider, action.deadline, attempts)
