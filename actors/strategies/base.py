"""What every strategy shares: the record of attempts, and turning it into an Answer or Failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from bus import messages as m
from bus.deadline import now


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: str
    result: m.Completion | m.Failure
    ms: float

    @property
    def ok(self) -> bool:
        return isinstance(self.result, m.Completion)

    @property
    def outcome(self) -> str:
        return "ok" if isinstance(self.result, m.Completion) else self.result.kind


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``provider`` (after waiting ``delay_s``) with the call ending at ``deadline``."""

    provider: str
    deadline: float
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Done:
    result: m.Completion | m.Failure


# How a runner reaches a provider: (provider, deadline) -> its Completion or Failure.
CallProvider = Callable[[str, float], Awaitable[m.Completion | m.Failure]]


async def attempt(
    call: CallProvider, provider: str, deadline: float, attempts: list[Attempt]
) -> m.Completion | m.Failure:
    """Call ``provider`` and record the attempt (appended as soon as it ends)."""
    started = now()
    try:
        result = await call(provider, deadline)
    except asyncio.CancelledError:  # the ask's own deadline or a Cancel interrupted this call
        result = m.Failure(kind=m.TIMEOUT, message="interrupted: the ask ran out of time or was cancelled", provider=provider)
        raise
    finally:
        attempts.append(Attempt(provider, result, round((now() - started) * 1000.0, 3)))
    return result


def route_of(attempts: list[Attempt]) -> list[m.Step]:
    return [
        m.Step(
            provider=a.provider,
            outcome=a.outcome,
            ms=a.ms,
            detail=None if a.ok else a.result.message,
        )
        for a in attempts
    ]


def summary(attempts: list[Attempt]) -> str:
    return ", ".join(f"{a.provider}: {a.outcome}" for a in attempts) or "no provider was called"


def finish(
    ask: m.Ask,
    result: m.Completion | m.Failure,
    attempts: list[Attempt],
    skipped: list[m.Step] = (),
    *,
    cost_usd: float | None = 0.0,
) -> m.Answer | m.Failure:
    """The reply to ``ask``: an Answer carrying its route (providers skipped first), or the Failure."""
    route = [*skipped, *route_of(attempts)]
    if isinstance(result, m.Failure):
        return msgspec.structs.replace(result, route=route)
    return m.Answer(
        id=ask.id,
        text=result.text,
        data=result.data,
        confidence=result.confidence,
        providers=[result.provider],
        usage=result.usage,
        cost_usd=cost_usd,
        route=route,
    )
