"""Time budgets: the edge turns a budget into a deadline; the deadline travels as a header.

``Llm-Budget-Ms`` carries the milliseconds left when the message was sent. Each receiver sets its
own deadline = arrival + budget on its own monotonic clock, so clock skew between hosts does not
matter (transit time is the only error, and it is on the safe side for the sender). A message
without the header (``nats req …``) gets the body's ``budget_ms`` or the configured default.

Deadlines are ``time.monotonic()`` seconds, the same clock as asyncio's ``loop.time()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextvars import ContextVar

BUDGET_HEADER = "Llm-Budget-Ms"
ASK_ID_HEADER = "Llm-Ask-Id"
# on a stream request: the consumer acknowledges every this many ms (``StreamAck``); absent: no acks
ACK_HEADER = "Llm-Ack-Ms"
# W3C trace context: sent only when the caller has one (set ``traceparent``) or spans are on
# (``actors.tracing``); a handler that received one passes it on to every request it makes
TRACE_HEADER = "traceparent"
traceparent: ContextVar[str | None] = ContextVar("llmbus_traceparent", default=None)

now = time.monotonic


def deadline_in(budget_ms: float, *, start: float | None = None) -> float:
    """The deadline ``budget_ms`` from ``start`` (default: now)."""
    return (now() if start is None else start) + budget_ms / 1000.0


def remaining_s(deadline: float) -> float:
    """Seconds left until ``deadline`` (never negative)."""
    return max(0.0, deadline - now())


def budget_ms_left(deadline: float) -> int:
    """What to put in the header of a message sent now under ``deadline``."""
    return max(0, int((deadline - now()) * 1000.0))


def deadline_from(
    headers: Mapping[str, str] | None,
    *,
    arrival: float,
    fallback_ms: float,
) -> float:
    """The receiver's deadline for a message that arrived at ``arrival``."""
    if headers:
        raw = headers.get(BUDGET_HEADER)
        if raw is not None:
            try:
                budget_ms = float(raw)
            except ValueError:
                budget_ms = math.nan  # a malformed header is treated like a missing one
            if math.isfinite(budget_ms):  # "inf" or "nan" would mean no deadline at all
                return arrival + max(0.0, budget_ms) / 1000.0
    return arrival + fallback_ms / 1000.0


def headers_for(deadline: float, ask_id: str | None) -> dict[str, str]:
    """Headers of a request sent now under ``deadline`` on behalf of ``ask_id``."""
    hdrs = {BUDGET_HEADER: str(budget_ms_left(deadline))}
    if ask_id:
        hdrs[ASK_ID_HEADER] = ask_id
    trace = traceparent.get()
    if trace is not None:
        hdrs[TRACE_HEADER] = trace
    return hdrs


class Alarms:
    """Deadlines of many requests on one loop timer per millisecond.

    Every request has a deadline, and a loop timer per request (``loop.call_at``: a TimerHandle, a
    heap push, a cancel that leaves it in the heap until it is swept) costs ~2.1 µs; here a deadline
    is an entry in its millisecond's dict, ~0.7 µs (measured, 200 in flight). One timer per
    millisecond that has deadlines fires that millisecond's entries. An alarm fires up to 1 ms
    **early**, never late: a caller gets its timeout before its own deadline, not after.
    """

    RESOLUTION_S = 0.001

    __slots__ = ("loop", "slots", "count")

    def __init__(self, loop) -> None:
        self.loop = loop
        self.slots: dict[int, dict[int, tuple]] = {}
        self.count = 0

    def at(self, when: float, fn, *args) -> tuple[int, int]:
        """Call ``fn(*args)`` at ``when`` (loop time, up to 1 ms early); a handle for ``cancel``."""
        slot = int(when * 1000.0)
        entries = self.slots.get(slot)
        if entries is None:
            entries = self.slots[slot] = {}
            self.loop.call_at(slot / 1000.0, self._fire, slot)
        self.count += 1
        entries[self.count] = (fn, args)
        return slot, self.count

    def cancel(self, handle: tuple[int, int]) -> None:
        entries = self.slots.get(handle[0])
        if entries is not None:
            entries.pop(handle[1], None)

    def _fire(self, slot: int) -> None:
        for fn, args in self.slots.pop(slot, {}).values():
            fn(*args)


_alarms: dict = {}


def alarms(loop) -> Alarms:
    """The ``Alarms`` of ``loop`` (one per event loop)."""
    found = _alarms.get(loop)
    if found is None:
        if len(_alarms) > 16:  # loops of finished runs (tests, CLI calls): drop the closed ones
            for old in [lp for lp in _alarms if lp.is_closed()]:
                del _alarms[old]
        found = _alarms[loop] = Alarms(loop)
    return found
