"""The circuit breaker of one provider: a pure state machine over outcomes and time.

    CLOSED ──(N consecutive counted failures, or auth: at once)──► OPEN
    OPEN ──(cooldown passed)──► HALF_OPEN      (one probe at a time, fleet-wide: see health.py)
    HALF_OPEN ──(M successes)──► CLOSED
    HALF_OPEN ──(a counted failure)──► OPEN    (a new cooldown)

A ``rate_limited`` failure with ``retry_after_s`` opens the breaker, or keeps it open, until at
least then: Retry-After may only extend the open time, never shorten it. Which failure kinds count
is the table ``COUNTED`` below; the rest say nothing about the provider's health (the request was
bad, or the caller gave up).

Times are wall-clock seconds (``time.time()``): breaker states are shared through JetStream KV by
processes on different hosts, whose monotonic clocks have nothing in common.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from bus import messages as m

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# kind -> counts against the provider's health?
COUNTED: dict[str, bool] = {
    m.TIMEOUT: True,
    m.RATE_LIMITED: True,
    m.OVERLOADED: True,
    m.UNAVAILABLE: True,
    m.INTERNAL: True,
    m.AUTH: True,  # and opens at once: the provider is misconfigured
    m.BAD_REQUEST: False,
    m.CONTEXT_LENGTH: False,
    m.CONTENT_FILTER: False,
    m.INVALID_OUTPUT: False,
    m.BUDGET_EXCEEDED: False,
    m.NO_HEALTHY_PROVIDER: False,
    m.ALL_FAILED: False,
    m.CANCELLED: False,
}
OPENS_AT_ONCE = frozenset({m.AUTH})


@dataclass(frozen=True)
class BreakerConfig:
    failures_to_open: int = 5
    cooldown_s: float = 60.0
    successes_to_close: int = 2


Breaker = m.BreakerState


def effective(b: Breaker, now: float) -> Breaker:
    """The state as of ``now``: an OPEN breaker whose cooldown passed is HALF_OPEN."""
    if b.state == OPEN and now >= b.open_until:
        return msgspec.structs.replace(
            b, state=HALF_OPEN, half_open_successes=0, probe_round=b.probe_round + 1, changed_at=b.open_until
        )
    return b


def allows(b: Breaker, now: float) -> bool:
    """May a request go to this provider now? (HALF_OPEN: only as the round's single probe.)"""
    return effective(b, now).state != OPEN


def record(b: Breaker, *, ok: bool, kind: str | None, retry_after_s: float | None, now: float,
           config: BreakerConfig) -> Breaker:
    """The breaker after one outcome."""
    b = effective(b, now)
    replace = msgspec.structs.replace
    if ok:
        if b.state == HALF_OPEN:
            done = b.half_open_successes + 1
            if done >= config.successes_to_close:
                return Breaker(provider=b.provider, state=CLOSED, changed_at=now, probe_round=b.probe_round + 1)
            return replace(b, half_open_successes=done, probe_round=b.probe_round + 1)
        return replace(b, consecutive_failures=0) if b.consecutive_failures else b
    if kind is None or not COUNTED.get(kind, True):
        return b
    failures = b.consecutive_failures + 1
    until = now + config.cooldown_s
    if kind == m.RATE_LIMITED and retry_after_s is not None:
        hinted = now + retry_after_s
        if b.state == OPEN:  # Retry-After may only extend the open time
            return replace(b, consecutive_failures=failures, open_until=max(b.open_until, hinted))
        return _open(b, failures, max(hinted, until if failures >= config.failures_to_open else hinted), kind, now)
    if b.state == OPEN:
        return replace(b, consecutive_failures=failures)
    if b.state == HALF_OPEN or kind in OPENS_AT_ONCE or failures >= config.failures_to_open:
        return _open(b, failures, until, kind, now)
    return replace(b, consecutive_failures=failures)


def _open(b: Breaker, failures: int, until: float, kind: str, now: float) -> Breaker:
    return msgspec.structs.replace(
        b,
        state=OPEN,
        consecutive_failures=failures,
        half_open_successes=0,
        open_until=max(until, b.open_until),
        reason=kind,
        probe_round=b.probe_round + 1,
        changed_at=now,
    )


def reset(provider: str, now: float) -> Breaker:
    return Breaker(provider=provider, changed_at=now)
