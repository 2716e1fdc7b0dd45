"""Hedging's shared state, pure: the extra-call budget and the delay before a hedge.

``HedgeBudget`` is a token bucket counted in calls, not in time: every first call of a hedged ask
puts ``max_extra`` tokens in (0.05: one hedge per 20 asks), a hedge takes one whole token, and the
bucket holds at most ``burst``. So extra calls stay at or below ``max_extra`` of all calls over any
stretch longer than ``burst / max_extra`` asks, however slow the providers get: when everything is
slow every ask wants a hedge, the bucket runs dry, and hedging stops by itself instead of doubling
the load of a struggling provider.

``delay_s`` picks the hedge delay for one provider from what the router knows:
- ``p95_ms``: the provider's live p95 of successful calls (the health actor's sketch, shared by
  every router through KV) — the default delay;
- ``first_answer``: this router's own sketch of "time until the first call answered", with calls
  that never answered counted as infinite (``observe``). Its quantile at ``1 - max_extra * fill``
  is the delay at which the share of asks still waiting equals the budget: stalls (which never
  appear in the success p95) would otherwise make more asks want a hedge than the bucket allows,
  and the bucket would then hand its tokens to whichever asks came first, stalled or not.
The delay is the larger of the two; with neither known, the configured default.
"""

from __future__ import annotations

import math

from actors.pure.quantiles import Sketch

WARM_SAMPLES = 200  # a first-answer sketch below this many samples is not used yet
FILL = 0.9  # aim the first-answer quantile at this share of the budget, so the bucket rarely runs dry


class HedgeBudget:
    __slots__ = ("tokens", "granted", "denied", "asks")

    def __init__(self, tokens: float = 1.0) -> None:
        self.tokens = tokens
        self.granted = 0
        self.denied = 0
        self.asks = 0

    def credit(self, max_extra: float, burst: float) -> None:
        """A hedged ask made its first call."""
        self.asks += 1
        self.tokens = min(burst, self.tokens + max_extra)

    def take(self) -> bool:
        """True (and one token less) when a hedge may go out now."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.granted += 1
            return True
        self.denied += 1
        return False


def delay_s(p95_ms: float | None, first_answer: Sketch | None, *, max_extra: float, adaptive: bool,
            default_s: float) -> float:
    """The hedge delay for one provider (see the module docstring)."""
    candidates = []
    if p95_ms is not None:
        candidates.append(p95_ms / 1000.0)
    if adaptive and first_answer is not None and first_answer.count >= WARM_SAMPLES:
        q = first_answer.quantile(1.0 - max_extra * FILL)
        if q is not None and q != math.inf:
            candidates.append(q)
    return max(candidates) if candidates else default_s
