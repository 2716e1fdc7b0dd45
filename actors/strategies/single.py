"""Single: one call to one provider (the ask's first, or the configured first); its reply is final."""

from __future__ import annotations

from collections.abc import Sequence

from bus import messages as m
from bus.deadline import now
from actors.strategies.route import Attempt, CallProvider


async def run(
    order: Sequence[str], call: CallProvider, *, deadline: float
) -> tuple[m.Completion | m.Failure, list[Attempt]]:
    provider = order[0]
    started = now()
    result = await call(provider, deadline)
    return result, [Attempt(provider, result, round((now() - started) * 1000.0, 3))]
