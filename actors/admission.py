"""Requests waiting for a slot when an actor is full: bounded, highest priority first.

An actor at ``max_concurrency`` answers ``overloaded`` at once (``actors.runtime``) — unless it has
a queue (``max_queued`` > 0) and the endpoint says how to rank a request (``Endpoint.priority``:
the router ranks an ask by ``Ask.priority``, else its tier's ``priority``). Then the request
waits here, and a finishing handler starts the highest-priority one waiting (first come first
served within a priority). The queue is bounded: a newcomer to a full queue takes the place of
the lowest-priority one waiting if it ranks above it (that one is answered ``overloaded``), else
it is answered ``overloaded`` itself — at once, with ``retry_after_s`` (how long the last request
served from the queue had waited), never dropped. A waiting request still has its deadline (it is
answered ``timeout`` when the deadline passes before a slot frees) and its ask id (a ``Cancel``
answers it ``cancelled``); stopping answers every one waiting ``unavailable``.

The queue costs nothing until an actor is full: ranking (which may decode the request) happens
only then.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

from bus.deadline import now

DEFAULT_RETRY_S = 0.1  # the retry hint before anything was served from the queue
MAX_RETRY_S = 5.0


@dataclass(slots=True)
class Waiting:
    """One request waiting: its endpoint, message and context (deadline from its arrival)."""

    rank: tuple[int, int]  # (-priority, order): the list is sorted by it
    priority: int
    ep: Any
    msg: Any
    ctx: Any
    since: float
    timer: Any = field(default=None, compare=False)
    start: Any = field(default=None, compare=False)  # the dispatcher's: starts its handler


class Queue:
    """The waiting requests of one actor, sorted best first."""

    __slots__ = ("limit", "items", "order", "waited_s", "served", "shed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[Waiting] = []
        self.order = itertools.count()
        self.waited_s: float | None = None  # how long the last request served from here waited
        self.served = 0
        self.shed = 0  # answered overloaded (refused or evicted)

    def __len__(self) -> int:
        return len(self.items)

    def offer(self, ep: Any, msg: Any, ctx: Any, priority: int) -> tuple[Waiting | None, Waiting | None]:
        """Queue a request: (the entry queued or None, the entry refused or None) — when full, the
        refused one is the newcomer or the lowest-priority entry it displaced."""
        entry = Waiting((-priority, next(self.order)), priority, ep, msg, ctx, now())
        if len(self.items) < self.limit:
            bisect.insort(self.items, entry, key=_rank)
            return entry, None
        worst = self.items[-1] if self.items else None
        if worst is None or worst.priority >= priority:
            self.shed += 1
            return None, entry
        self.items.pop()
        bisect.insort(self.items, entry, key=_rank)
        self.shed += 1
        return entry, worst

    def pop(self) -> Waiting | None:
        """The best entry waiting (None when empty)."""
        if not self.items:
            return None
        entry = self.items.pop(0)
        self.served += 1
        self.waited_s = now() - entry.since
        return entry

    def remove(self, entry: Waiting) -> bool:
        """Take ``entry`` out (its deadline passed, or it was cancelled); False if it had left."""
        i = bisect.bisect_left(self.items, entry.rank, key=_rank)
        if i < len(self.items) and self.items[i] is entry:
            del self.items[i]
            return True
        return False

    def of_ask(self, ask_id: str) -> list[Waiting]:
        return [e for e in self.items if e.ctx.ask_id == ask_id]

    def retry_after_s(self) -> float:
        """The retry hint of an ``overloaded`` answer: about how long a slot takes to free."""
        waited = self.waited_s if self.waited_s is not None else DEFAULT_RETRY_S
        return round(min(MAX_RETRY_S, max(0.01, waited)), 3)


def _rank(entry: Waiting) -> tuple[int, int]:
    return entry.rank
