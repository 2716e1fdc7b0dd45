"""Checks of the facts providers publish (``Outcome``, ``Usage``) before health or cost act on them.

Events arrive on subjects anyone with publish rights on ``<root>.events.>`` can write to, and both
consumers turn them into KV keys (``state.<provider>``), subjects (``<root>.events.health.<provider>``),
day buckets and money. A forged or broken event must be skipped, not obeyed: a provider name that
is no subject token, negative or absurd token counts (a budget bypass: spent −500 USD), a time
stamp that is not a plausible Unix time (``Usage{at: 1e300}`` overflowed the day bucket). Each
``*_problem`` function says what is wrong (for the skip log), or None.
"""

from __future__ import annotations

import math
import time

from bus import messages as m
from bus import names

MAX_TOKENS = 100_000_000  # per call: far above any model's context plus output
MAX_LATENCY_MS = 24 * 3600 * 1000.0
MAX_RETRY_AFTER_S = 24 * 3600.0
EARLIEST_AT = 946_684_800.0  # 2000-01-01: a stamp before it is no real event's
AHEAD_S = 24 * 3600.0  # clocks disagree, but not by a day


def _at_problem(at: float) -> str | None:
    if at == 0.0:  # unset: the consumer's clock is used
        return None
    if not (math.isfinite(at) and EARLIEST_AT <= at <= time.time() + AHEAD_S):
        return f"at {at!r} is not a plausible Unix time"
    return None


def _amount_problem(value: float | None, what: str, top: float) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= top):
        return f"{what} {value!r} must be between 0 and {top:g}"
    return None


def outcome_problem(o: m.Outcome) -> str | None:
    return (names.problem(o.provider, "provider")
            or (names.problem(o.kind, "kind") if o.kind is not None else None)
            or _amount_problem(o.latency_ms, "latency_ms", MAX_LATENCY_MS)
            or _amount_problem(o.retry_after_s, "retry_after_s", MAX_RETRY_AFTER_S)
            or _at_problem(o.at))


def usage_problem(u: m.Usage) -> str | None:
    for value, what, kind in ((u.ask_id, "ask_id", "label"), (u.call_id, "call_id", "label"),
                              (u.provider, "provider", "token"), (u.model or "-", "model", "label")):
        if (bad := names.problem(value, what, kind)) is not None:
            return bad
    for value, what, kind in ((u.tier, "tier", "token"), (u.user, "user", "label"), (u.strategy, "strategy", "token")):
        if value is not None and (bad := names.problem(value, what, kind)) is not None:
            return bad
    t = u.usage
    return (_amount_problem(t.input_tokens, "input_tokens", MAX_TOKENS)
            or _amount_problem(t.output_tokens, "output_tokens", MAX_TOKENS)
            or _amount_problem(t.cached_tokens, "cached_tokens", MAX_TOKENS)
            or _at_problem(u.at))
