"""Requests-per-minute and tokens-per-minute limits, enforced before a call is made.

Two token buckets (capacity = the per-minute limit, refilled continuously). ``admit`` either takes
what a call needs and returns 0, or takes nothing and returns how long until it could — so a
provider never earns a 429 it could have predicted, and the caller decides whether that wait fits
its deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class _Bucket:
    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.clock = clock
        self.at = clock()

    def refill(self) -> None:
        t = self.clock()
        self.level = min(self.capacity, self.level + (t - self.at) * self.rate)
        self.at = t

    def wait_for(self, amount: float) -> float:
        amount = min(amount, self.capacity)  # a call larger than a minute's worth waits for a full bucket
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate


class RateLimits:
    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._requests = _Bucket(rpm, clock) if rpm else None
        self._tokens = _Bucket(tpm, clock) if tpm else None

    def admit(self, tokens: int) -> float:
        """Take one request and ``tokens`` now (returns 0.0), or return seconds to wait."""
        needs = [(b, n) for b, n in ((self._requests, 1), (self._tokens, tokens)) if b is not None]
        for bucket, _ in needs:
            bucket.refill()
        wait = max((bucket.wait_for(n) for bucket, n in needs), default=0.0)
        if wait == 0.0:
            for bucket, n in needs:
                bucket.level -= min(n, bucket.capacity)
        return wait
