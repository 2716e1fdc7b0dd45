"""Single: one call to one provider (the ask's first, or the configured first); its reply is final."""

from __future__ import annotations

from bus import messages as m
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, register


@register
class Single(Policy):
    name = "single"
    description = "one call to the first provider; its reply is final"

    def begin(self, now: float) -> list[Action]:
        return [Call("0", self.plan.candidates[0])]

    def decide(self, event: Event, now: float) -> list[Action]:
        if type(event) is Reply:
            return [Done(event.result)]
        if type(event) is Deadline:
            return [Done(self.failure("budget spent", kind=m.TIMEOUT))]
        return []
