"""The one runner every strategy runs on: it carries out a policy's actions and feeds it events.

The runner owns the I/O a policy must not do: starting each call (through ``Calls``, the router's
side: per-call deadlines, budget reservations, the request on the bus), cancelling one call
(``Cancel(ask_id, call_id)`` on the bus — never the whole ask), timers for ``WakeAt``, and the
strategy's deadline (a ``Deadline`` event). It records every call for the answer's route, a loser
cancelled by the policy (or left open when the policy finished) included, as ``cancelled``.

The common case — one call outstanding, no timer (``single``; ``failover`` between attempts) — is
awaited inline: no task, no queue, no extra timer, so these policies cost what a direct call costs.
Parallel calls run as tasks whose completions are queued as events.

A call still open when the policy is done is cancelled — unless its reply has already come back
(a straggler that answered while the policy decided): it is recorded with that reply, so its usage
is in the Answer's. A straggler cancelled before it answered has no usage to report (the provider
stopped; what a remote API bills for a dropped request is not knowable here).

A policy with a ``prepare`` coroutine has it awaited first, within the deadline (its slow work, in
a worker thread, off the router's loop); the lines of a ``Done.log`` are logged once the policy is
done, each with the ask id and the strategy (INFO: level-gated, and empty for most policies).

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

import structlog

from bus import messages as m
from actors.strategies.base import Call, Cancel, Deadline, Done, Policy, Progress, Reply, Wake, WakeAt, outcome_of

CANCELLED = "cancelled"
log = structlog.get_logger("llmbus.strategy")


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
    """Run ``policy`` to its ``Done``, carrying out its actions (see the module docstring)."""
    outcome = await _Run(policy, calls, deadline, clock).go()
    if outcome.done.log:
        ask_id = policy.plan.ask.id
        for event, fields in outcome.done.log:
            log.info(event, ask_id=ask_id, strategy=policy.name, **fields)
    return outcome


class _Run:
    """One ask's run. The state parallel calls need (tasks, the event queue, timers) is made only
    when a policy first has two things outstanding: a one-call-at-a-time policy never pays for it."""

    __slots__ = ("policy", "calls", "deadline", "clock", "records", "by_key", "tasks", "events", "timers",
                 "waiter", "deadline_timer", "loop")

    def __init__(self, policy: Policy, calls: Calls, deadline: float, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.calls = calls
        self.deadline = deadline
        self.clock = clock
        self.records: list[Record] = []
        self.by_key: dict[str, Record] | None = None
        self.tasks: dict[str, asyncio.Task] | None = None
        self.events: deque | None = None
        self.timers: list[asyncio.TimerHandle] | None = None
        self.waiter: asyncio.Future | None = None
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def go(self) -> Outcome:
        policy, clock = self.policy, self.clock
        try:
            if policy.prepare is not None:
                failure = await self._prepare()
                if failure is not None:
                    return Outcome(Done(failure), self.records)
            try:
                actions = policy.start(clock())
            except Exception as exc:
                return Outcome(Done(_bug(policy, exc)), self.records)
            while True:
                inline: Record | None = None
                last = len(actions) - 1
                for i, action in enumerate(actions):
                    kind = type(action)
                    if kind is Call:
                        rec = self._open(action)
                        if rec is None:
                            return Outcome(Done(_bug(policy, ValueError(f"call key {action.key!r} reused"))),
                                           self.records)
                        if i == last and not self.tasks and not self.timers and not self.events:
                            inline = rec  # the only thing outstanding: await it here
                        else:
                            self._start(rec)
                    elif kind is Done:
                        return Outcome(action, self.records)
                    elif kind is Cancel:
                        await self._cancel(action)
                    elif kind is WakeAt:
                        self._parallel()
                        self.timers.append(self.loop.call_at(action.at, self._push, Wake(action.at)))
                    elif kind is Progress:
                        shown = getattr(self.calls, "progress", None)  # a streamed ask's relay, if any
                        if shown is not None:
                            shown(action)
                    else:
                        return Outcome(Done(_bug(policy, TypeError(f"not an action: {action!r}"))), self.records)
                if inline is not None:
                    call = inline.call
                    result = await self.calls.call(call, inline.call_id, self._call_deadline(call))
                    inline.close(result, clock())
                    event: Any = Reply(call.key, result, inline.ms, call.target)
                else:
                    event = await self._next_event()
                    if event is None:
                        return Outcome(Done(_bug(policy, RuntimeError("nothing to wait for and not done"))),
                                       self.records)
                try:
                    actions = policy.step(event, clock())
                except Exception as exc:
                    return Outcome(Done(_bug(policy, exc)), self.records)
                if type(event) is Deadline and not any(type(a) is Done for a in actions):
                    return Outcome(Done(policy.failure("budget spent", kind=m.TIMEOUT)), self.records)
        finally:
            await self._close()

    async def _prepare(self) -> m.Failure | None:
        try:
            await asyncio.wait_for(self.policy.prepare(), max(0.0, self.deadline - self.clock()))
        except TimeoutError:
            return self.policy.failure("its preparation (e.g. extracting documents) did not finish in time",
                                       kind=m.TIMEOUT)
        except Exception as exc:
            return _bug(self.policy, exc)
        return None

    # --- calls ---------------------------------------------------------------------------------
    def _open(self, call: Call) -> Record | None:
        """The record of a new call (None when the policy reused a key: a bug in the policy)."""
        if self.by_key is None and self.records:  # a second call: index them by key from now on
            self.by_key = {r.call.key: r for r in self.records}
        if self.by_key is not None and call.key in self.by_key:
            return None
        rec = Record(call, self.calls.new_id(), self.clock())
        self.records.append(rec)
        if self.by_key is not None:
            self.by_key[call.key] = rec
        return rec

    def _call_deadline(self, call: Call) -> float:
        return self.deadline if call.deadline is None or call.deadline > self.deadline else call.deadline

    def _parallel(self) -> None:
        if self.tasks is None:
            self.loop = asyncio.get_running_loop()
            self.tasks, self.events, self.timers = {}, deque(), []
            if self.by_key is None:
                self.by_key = {r.call.key: r for r in self.records}

    def _start(self, rec: Record) -> None:
        self._parallel()
        call = rec.call
        task = self.loop.create_task(self.calls.call(call, rec.call_id, self._call_deadline(call)))
        self.tasks[call.key] = task
        task.add_done_callback(lambda t, rec=rec: self._finished(rec, t))

    def _finished(self, rec: Record, task: asyncio.Task) -> None:
        if task.cancelled() or self.tasks.get(rec.call.key) is not task:
            return  # cancelled by the runner: already recorded
        del self.tasks[rec.call.key]
        exc = task.exception()
        result = task.result() if exc is None else m.Failure(kind=m.INTERNAL, message=f"{type(exc).__name__}: {exc}")
        rec.close(result, self.clock())
        self._push(Reply(rec.call.key, result, rec.ms, rec.call.target))

    async def _cancel(self, action: Cancel) -> None:
        task = self.tasks.pop(action.key, None) if self.tasks else None
        if task is not None:
            task.cancel()
            rec = self.by_key[action.key]
            rec.cancel(self.clock())
            self.policy.cancelled()
            await self.calls.cancel(rec, action.reason)

    # --- events --------------------------------------------------------------------------------
    def _push(self, event: Any) -> None:
        self.events.append(event)
        fut = self.waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _next_event(self) -> Any:
        """The next event; None when there is nothing to wait for."""
        self._parallel()
        events = self.events
        if not events:
            if not self.tasks and not self.timers:
                return None
            if self.deadline_timer is None:
                self.deadline_timer = self.loop.call_at(self.deadline, self._push, Deadline())
            self.waiter = self.loop.create_future()
            await self.waiter
            self.waiter = None
        event = events.popleft()
        if type(event) is Wake:
            self.timers[:] = [t for t in self.timers if t.when() > event.at]
        return event

    async def _close(self) -> None:
        if self.timers:
            for timer in self.timers:
                timer.cancel()
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        left = [r for r in self.records if r.ms is None]
        if left:
            at = self.clock()
            if self.tasks:
                for task in self.tasks.values():
                    task.cancel()
            for rec in left:
                task = self.tasks.get(rec.call.key) if self.tasks else None
                if task is not None and task.done() and not task.cancelled() and task.exception() is None:
                    rec.close(task.result(), at)  # a straggler that answered as the ask ended: its usage counts
                    continue
                rec.cancel(at)
                await asyncio.shield(self.calls.cancel(rec, "the ask no longer needs it"))


def _bug(policy: Policy, exc: BaseException) -> m.Failure:
    return m.Failure(kind=m.INTERNAL, message=f"strategy {policy.name} failed: {type(exc).__name__}: {exc}")
