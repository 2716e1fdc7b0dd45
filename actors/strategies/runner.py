"""The one runner every strategy runs on: it carries out a policy's actions and feeds it events.

The runner owns the I/O a policy must not do: starting each call (through ``Calls``, the router's
side: per-call deadlines, budget reservations, the request on the bus), cancelling one call
(``Cancel(ask_id, call_id)`` on the bus — never the whole ask), timers for ``WakeAt``, and the
strategy's deadline (a ``Deadline`` event). It records every call for the answer's route, a loser
cancelled by the policy (or left open when the policy finished) included, as ``cancelled``.

The common case — one call outstanding, no timer (``single``; ``failover`` between attempts) — is
awaited inline: no task, no queue, no extra timer, so these policies cost what a direct call costs.
Parallel calls run as tasks whose completions are queued as events.

Whatever happens the runner returns a ``Done``: a policy that ignores the ``Deadline`` event gets
``timeout``, a policy that raises gets ``internal`` (logged by the caller), and when the ask itself
is cancelled every call still open is cancelled on the bus before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bus import messages as m
from actors.strategies.base import Call, Cancel, Deadline, Done, Policy, Reply, Wake, WakeAt, outcome_of

CANCELLED = "cancelled"


@dataclass(slots=True)
class Record:
    """One call of the ask, as the route reports it."""

    call: Call
    call_id: str
    started: float
    ms: float | None = None  # None while open
    result: Any = None
    outcome: str = ""  # "ok", a failure kind, or "cancelled"

    def close(self, result: Any, at: float) -> None:
        self.result = result
        self.ms = round((at - self.started) * 1000.0, 3)
        self.outcome = outcome_of(result)

    def cancel(self, at: float) -> None:
        self.ms = round((at - self.started) * 1000.0, 3)
        self.outcome = CANCELLED


class Calls(Protocol):
    """The router's side of a call (``actors.router.calls``)."""

    def new_id(self) -> str: ...

    async def call(self, call: Call, call_id: str, deadline: float) -> Any:
        """The call's reply or a Failure (never raises for a failed call)."""

    async def cancel(self, record: Record, reason: str) -> None:
        """Tell the callee to stop (``Cancel(ask_id, call_id)``); release what the call held."""


@dataclass(slots=True)
class Outcome:
    done: Done
    records: list[Record] = field(default_factory=list)


async def run(policy: Policy, calls: Calls, *, deadline: float, clock: Callable[[], float]) -> Outcome:
    loop = asyncio.get_running_loop()
    records: list[Record] = []
    by_key: dict[str, Record] = {}
    tasks: dict[str, asyncio.Task] = {}
    events: deque = deque()
    timers: list[asyncio.TimerHandle] = []
    waiter: list[asyncio.Future | None] = [None]
    deadline_timer: list[asyncio.TimerHandle | None] = [None]

    def push(event: Any) -> None:
        events.append(event)
        fut = waiter[0]
        if fut is not None and not fut.done():
            fut.set_result(None)

    def finished(rec: Record, task: asyncio.Task) -> None:
        if task.cancelled() or tasks.get(rec.call.key) is not task:
            return  # cancelled by the runner: already recorded
        del tasks[rec.call.key]
        exc = task.exception()
        result = task.result() if exc is None else m.Failure(kind=m.INTERNAL, message=f"{type(exc).__name__}: {exc}")
        rec.close(result, clock())
        push(Reply(rec.call.key, result, rec.ms, rec.call.target))

    def open_call(call: Call) -> Record:
        if call.key in by_key:
            raise ValueError(f"the policy reused call key {call.key!r}")
        rec = Record(call, calls.new_id(), clock())
        records.append(rec)
        by_key[call.key] = rec
        return rec

    def call_deadline(call: Call) -> float:
        return deadline if call.deadline is None or call.deadline > deadline else call.deadline

    try:
        try:
            actions = policy.start(clock())
        except Exception as exc:
            return Outcome(Done(_bug(policy, exc)), records)
        while True:
            inline: Record | None = None
            for i, action in enumerate(actions):
                kind = type(action)
                if kind is Call:
                    rec = open_call(action)
                    if not tasks and not timers and i == len(actions) - 1 and not events:
                        inline = rec  # the only thing outstanding: await it here
                    else:
                        task = loop.create_task(calls.call(action, rec.call_id, call_deadline(action)))
                        tasks[action.key] = task
                        task.add_done_callback(lambda t, rec=rec: finished(rec, t))
                elif kind is Done:
                    return Outcome(action, records)
                elif kind is Cancel:
                    task = tasks.pop(action.key, None)
                    if task is not None:
                        task.cancel()
                        rec = by_key[action.key]
                        rec.cancel(clock())
                        policy.cancelled()
                        await calls.cancel(rec, action.reason)
                elif kind is WakeAt:
                    timers.append(loop.call_at(action.at, push, Wake(action.at)))
                else:
                    return Outcome(Done(_bug(policy, TypeError(f"not an action: {action!r}"))), records)
            if inline is not None:
                result = await calls.call(inline.call, inline.call_id, call_deadline(inline.call))
                inline.close(result, clock())
                event: Any = Reply(inline.call.key, result, inline.ms, inline.call.target)
            else:
                if not events:
                    if not tasks and not timers:
                        return Outcome(Done(_bug(policy, RuntimeError("nothing to wait for and not done"))), records)
                    if deadline_timer[0] is None:
                        deadline_timer[0] = loop.call_at(deadline, push, Deadline())
                    waiter[0] = loop.create_future()
                    await waiter[0]
                    waiter[0] = None
                event = events.popleft()
                if type(event) is Wake:
                    timers[:] = [t for t in timers if t.when() > event.at]
            try:
                actions = policy.step(event, clock())
            except Exception as exc:
                return Outcome(Done(_bug(policy, exc)), records)
            if type(event) is Deadline and not any(type(a) is Done for a in actions):
                return Outcome(Done(policy.failure("budget spent", kind=m.TIMEOUT)), records)
    finally:
        for timer in timers:
            timer.cancel()
        if deadline_timer[0] is not None:
            deadline_timer[0].cancel()
        left = [r for r in records if r.ms is None]
        if left:
            at = clock()
            for key, task in tasks.items():
                task.cancel()
            for rec in left:
                rec.cancel(at)
                await asyncio.shield(calls.cancel(rec, "the ask no longer needs it"))


def _bug(policy: Policy, exc: BaseException) -> m.Failure:
    return m.Failure(kind=m.INTERNAL, message=f"strategy {policy.name} failed: {type(exc).__name__}: {exc}")
