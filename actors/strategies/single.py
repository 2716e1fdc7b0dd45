"""Single: one call to one provider (the ask's first, or the configured first); its reply is final."""

from __future__ import annotations

from collections.abc import Sequence

from bus import messages as m
from actors.strategies.base import Attempt, CallProvider, attempt


async def run(
    order: Sequence[str], call: CallProvider, *, deadline: float, attempts: list[Attempt]
) -> m.Completion | m.Failure:
    return await attempt(call, order[0], deadline, attempts)
