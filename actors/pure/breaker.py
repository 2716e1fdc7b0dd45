"""The circuit breaker of one provider: a pure state machine over outcomes and time.

    CLOSED ──(N consecutive counted failures)──► OPEN
    OPEN ──(cooldown passed)──► HALF_OPEN      (one probe at a time, fleet-wide: see health.py)
    HALF_OPEN ──(M successes)──► CLOSED
    HALF_OPEN ──(a counted failure)──► OPEN    (a new cooldown)
    any state ──(auth)──► MISCONFIGURED        (at once; never probed, no cooldown)
    MISCONFIGURED ──(a success, or a reset)──► CLOSED

A ``rate_limited`` failure with ``retry_after_s`` opens the breaker, or keeps it open, until at
least then: Retry-After may only extend the open time, never shorten it. Which failure kinds count
is the table ``COUNTED`` below; the rest say nothing about the provider's health (the request was
bad, or the caller gave up). A kind this version does not know counts (it came from a newer peer
that saw the provider fail).

MISCONFIGURED is not a transient failure: a 401/403 (a leaked, revoked or blocked key, an account
out of quota) will not heal by waiting, so probing it every cooldown only spends requests on a key
that may be leaked. Routers skip it; nothing probes it; it does not touch the failure count. A
success closes it — routers never call it, so that success is a direct call, ``llmbus test NAME``
after the key was fixed — and so does ``llmbus health reset NAME``. It is a breaker state, not a
Failure kind: the call's failure is ``auth`` (what the caller learns), misconfigured is what health
concludes about the provider; a router that skips it says so in the Step (``breaker_misconfigured``)
and, when nothing else is left, answers ``no_healthy_provider`` as for an open breaker.

Times are wall-clock seconds (``time.time()``): breaker states are shared through JetStream KV by
processes on different hosts, whose monotonic clocks have nothing in common.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from bus import messages as m

CLOSED, OPEN, HALF_OPEN, MISCONFIGURED = "closed", "open", "half_open", "misconfigured"

# kind -> counts against the provider's health? (kinds in MISCONFIGURES do not count: they misconfigure)
COUNTED: dict[str, bool] = {
    m.TIMEOUT: True,
    m.RATE_LIMITED: True,
    m.OVERLOADED: True,
    m.UNAVAILABLE: True,
    m.INTERNAL: True,
    m.AUTH: False,  # not transient: MISCONFIGURES
    m.BAD_REQUEST: False,
    m.CONTEXT_LENGTH: False,
    m.CONTENT_FILTER: False,
    m.INVALID_OUTPUT: False,
    m.BUDGET_EXCEEDED: False,
    m.NO_HEALTHY_PROVIDER: False,
    m.ALL_FAILED: False,
    m.CANCELLED: False,
}
MISCONFIGURES = frozenset({m.AUTH})


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
    return effective(b, now).state not in (OPEN, MISCONFIGURED)


def record(b: Breaker, *, ok: bool, kind: str | None, retry_after_s: float | None, now: float,
           config: BreakerConfig, detail: str = "") -> Breaker:
    """The breaker after one outcome (``detail``: what the provider said, kept when it opens)."""
    b = effective(b, now)
    replace = msgspec.structs.replace
    if b.state == MISCONFIGURED:
        if ok:  # a direct call (llmbus test) got through: the key works again
            return Breaker(provider=b.provider, state=CLOSED, changed_at=now, probe_round=b.probe_round + 1)
        if kind in MISCONFIGURES and detail and detail != b.detail:
            return replace(b, detail=detail)
        return b  # nothing else says anything about a provider nobody calls
    if kind in MISCONFIGURES and not ok:
        return replace(b, state=MISCONFIGURED, half_open_successes=0, open_until=0.0, reason=kind,
                       detail=detail, probe_round=b.probe_round + 1, changed_at=now)
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
        return _open(b, failures, max(hinted, until if failures >= config.failures_to_open else hinted), kind, now,
                     detail)
    if b.state == OPEN:
        return replace(b, consecutive_failures=failures)
    if b.state == HALF_OPEN or failures >= config.failures_to_open:
        return _open(b, failures, until, kind, now, detail)
    return replace(b, consecutive_failures=failures)


def _open(b: Breaker, failures: int, until: float, kind: str, now: float, detail: str) -> Breaker:
    return msgspec.structs.replace(
        b,
        state=OPEN,
        consecutive_failures=failures,
        half_open_successes=0,
        open_until=max(until, b.open_until),
        reason=kind,
        probe_round=b.probe_round + 1,
        changed_at=now,
        detail=detail,
    )


def reset(provider: str, now: float) -> Breaker:
    return Breaker(provider=provider, changed_at=now)
