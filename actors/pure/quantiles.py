"""A streaming quantile sketch for latencies: log-spaced buckets with exponential decay.

Each value lands in bucket ``ceil(log(v) / log(gamma))``, so a quantile read back is within the
relative accuracy ``alpha`` of a true sample (gamma = (1 + alpha) / (1 - alpha), as in DDSketch).
Memory is bounded by the range of values, not their number: 0.1 ms … 1000 s at 2 % is ~400 buckets
at most, and a provider's latencies fill a few dozen. ``half_life`` (in samples) makes the sketch
follow change: each new sample weighs 2**(1/half_life) times the one before, so after ``half_life``
new samples the old ones count half — a provider that turns slow moves its p95 within a few hundred
calls, whatever its history. Weights are rescaled before they overflow.

A value of ``inf`` (a call that never answered, as the hedged policy records it) is counted above
every bucket: it pushes quantiles up without a number of its own. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math

RESCALE_AT = 1e100


class Sketch:
    __slots__ = ("alpha", "half_life", "_log_gamma", "_growth", "_weight", "_buckets", "_above", "total",
                 "count")

    def __init__(self, alpha: float = 0.02, half_life: float = 2000.0) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if half_life <= 0:
            raise ValueError("half_life must be above 0 samples")
        self.alpha = alpha
        self.half_life = half_life
        self._log_gamma = math.log((1.0 + alpha) / (1.0 - alpha))
        self._growth = 2.0 ** (1.0 / half_life)
        self._weight = 1.0  # what the next sample weighs
        self._buckets: dict[int, float] = {}
        self._above = 0.0  # weight of the infinite values
        self.total = 0.0  # the sum of all weights
        self.count = 0  # samples added (undecayed)

    def add(self, value: float) -> None:
        w = self._weight
        if value == math.inf:
            self._above += w
        else:
            key = math.ceil(math.log(max(value, 1e-9)) / self._log_gamma)
            buckets = self._buckets
            buckets[key] = buckets.get(key, 0.0) + w
        self.total += w
        self.count += 1
        self._weight = w * self._growth
        if self._weight > RESCALE_AT:
            self._rescale()

    def _rescale(self) -> None:
        s = 1.0 / self._weight
        self._buckets = {k: v * s for k, v in self._buckets.items() if v * s > 1e-12}
        self._above *= s
        self.total = sum(self._buckets.values()) + self._above
        self._weight = 1.0

    def quantile(self, q: float) -> float | None:
        """The value below which a share ``q`` of the (decayed) weight lies; None when empty;
        ``inf`` when that share reaches into the infinite values."""
        if self.total <= 0.0:
            return None
        rank = q * self.total
        seen = 0.0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                # the bucket's geometric middle: within alpha of every value in it
                return 2.0 * math.exp(key * self._log_gamma) / (1.0 + (1.0 + self.alpha) / (1.0 - self.alpha))
        return math.inf
