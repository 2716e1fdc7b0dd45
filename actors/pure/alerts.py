"""Alert rules over observations, with an injected clock: no I/O, table-testable.

The health actor feeds what it sees (``actors/health/alerts.py``) and calls ``evaluate()``, which
returns only the changes: an ``Alert`` when a rule's condition starts, the same alert with
``resolved=True`` when it ends — never a repeat while it lasts (deduplicated by (rule, subject)).

Rules (thresholds from ``[alerts]``, ``actors.settings.AlertSettings``):

- ``breaker_open``: a provider's breaker not closed (open, half-open, misconfigured) for longer than
  ``breaker_open_minutes`` — critical;
- ``error_rate``: a provider's failed calls over ``error_rate_percent`` of its calls in the last
  ``error_window_s``, once it made ``error_min_calls`` in it;
- ``fallback_routes``: a tier's answers from a fallback route (any but its first) over
  ``fallback_percent`` of its routed answers in the window, once it had ``fallback_min_asks``;
- ``budget_spend``: a budget's spend over ``budget_percent`` of its limit (critical at 100 %);
- ``quality_first_pass``: the supervisor's first-pass rate under ``quality_first_pass_percent`` in
  the window, once it reviewed ``quality_min_reviews`` drafts.

Counters that only grow (route answers, reviews) are fed as totals; the window is the difference
between now and the oldest snapshot still inside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from bus import messages as m

BREAKER_OPEN, ERROR_RATE, FALLBACK, BUDGET, QUALITY = (
    "breaker_open", "error_rate", "fallback_routes", "budget_spend", "quality_first_pass")
RULES = (BREAKER_OPEN, ERROR_RATE, FALLBACK, BUDGET, QUALITY)


class _Totals:
    """Snapshots (at, counters) of growing counters; ``delta(now, window)`` over the window."""

    def __init__(self) -> None:
        self.snaps: deque[tuple[float, dict[str, float]]] = deque()

    def add(self, at: float, counters: dict[str, float]) -> None:
        self.snaps.append((at, dict(counters)))

    def delta(self, now: float, window: float) -> dict[str, float]:
        """Growth from the newest snapshot at or before ``now - window`` (else the oldest) to the last."""
        while len(self.snaps) > 1 and self.snaps[1][0] <= now - window:
            self.snaps.popleft()
        if not self.snaps:
            return {}
        first, last = self.snaps[0][1], self.snaps[-1][1]
        return {k: max(0.0, v - first.get(k, 0.0)) for k, v in last.items()}


class Alerts:
    def __init__(self, rules: Any, *, clock: Callable[[], float]) -> None:
        self.rules = rules
        self.clock = clock
        self.not_closed: dict[str, float] = {}  # provider -> since when its breaker is not closed
        self.calls: dict[str, deque[tuple[float, bool]]] = {}
        self.routes: dict[str, _Totals] = {}  # tier -> snapshots of {route: answers}
        self.first_route: dict[str, str] = {}
        self.budgets: dict[str, tuple[float, float]] = {}  # budget name -> (spent, limit)
        self.reviews = _Totals()  # {"reviews": n, "passes": n}
        self.active: dict[tuple[str, str], m.Alert] = {}

    # --- observations -------------------------------------------------------------------------
    def breaker(self, provider: str, state: str, changed_at: float) -> None:
        if state == "closed":
            self.not_closed.pop(provider, None)
        else:
            self.not_closed.setdefault(provider, changed_at or self.clock())

    def call(self, provider: str, ok: bool, at: float | None = None) -> None:
        self.calls.setdefault(provider, deque()).append((self.clock() if at is None else at, ok))

    def route_totals(self, tier: str, first_route: str, answers: dict[str, int]) -> None:
        self.first_route[tier] = first_route
        self.routes.setdefault(tier, _Totals()).add(self.clock(), {k: float(v) for k, v in answers.items()})

    def budget(self, name: str, spent: float, limit: float) -> None:
        self.budgets[name] = (spent, limit)

    def review_totals(self, reviews: int, passes: int) -> None:
        self.reviews.add(self.clock(), {"reviews": float(reviews), "passes": float(passes)})

    # --- evaluation ---------------------------------------------------------------------------
    def conditions(self) -> dict[tuple[str, str], tuple[float, float, str, str]]:
        """(rule, subject) -> (value, threshold, severity, message) of every condition true now."""
        r, now, out = self.rules, self.clock(), {}
        for provider, since in self.not_closed.items():
            minutes = (now - since) / 60.0
            if minutes > r.breaker_open_minutes:
                out[(BREAKER_OPEN, provider)] = (round(minutes, 2), r.breaker_open_minutes, "critical",
                                                 f"the breaker of {provider} is open for {minutes:.1f} min")
        for provider, calls in self.calls.items():
            while calls and calls[0][0] <= now - r.error_window_s:
                calls.popleft()
            failed = sum(1 for _, ok in calls if not ok)
            if len(calls) >= r.error_min_calls and 100.0 * failed / len(calls) > r.error_rate_percent:
                pct = round(100.0 * failed / len(calls), 2)
                out[(ERROR_RATE, provider)] = (pct, r.error_rate_percent, "warning",
                                               f"{provider}: {failed} of {len(calls)} calls failed ({pct} %) "
                                               f"in {r.error_window_s:g} s")
        for tier, totals in self.routes.items():
            delta = totals.delta(now, r.error_window_s)
            total = sum(delta.values())
            fallback = total - delta.get(self.first_route.get(tier, ""), 0.0)
            if total >= r.fallback_min_asks and total > 0 and 100.0 * fallback / total > r.fallback_percent:
                pct = round(100.0 * fallback / total, 2)
                out[(FALLBACK, tier)] = (pct, r.fallback_percent, "warning",
                                         f"tier {tier}: {fallback:g} of {total:g} answers from fallback routes ({pct} %)")
        for name, (spent, limit) in self.budgets.items():
            if limit > 0 and 100.0 * spent / limit > r.budget_percent:
                pct = round(100.0 * spent / limit, 2)
                out[(BUDGET, name)] = (pct, r.budget_percent, "critical" if pct >= 100.0 else "warning",
                                       f"budget {name}: ${spent:.4f} of ${limit:.4f} spent ({pct} %)")
        delta = self.reviews.delta(now, r.error_window_s)
        reviews, passes = delta.get("reviews", 0.0), delta.get("passes", 0.0)
        if reviews >= r.quality_min_reviews and reviews > 0 and 100.0 * passes / reviews < r.quality_first_pass_percent:
            pct = round(100.0 * passes / reviews, 2)
            out[(QUALITY, "supervisor")] = (pct, r.quality_first_pass_percent, "warning",
                                            f"first-pass rate {pct} % over {reviews:g} reviews")
        return out

    def evaluate(self) -> list[m.Alert]:
        """The alerts that started or ended since the last call."""
        now, changes = self.clock(), []
        live = self.conditions()
        for key, (value, threshold, severity, message) in live.items():
            if key not in self.active:
                since = self.not_closed.get(key[1], now) if key[0] == BREAKER_OPEN else now
                alert = m.Alert(rule=key[0], subject=key[1], severity=severity, value=value, threshold=threshold,
                                since=since, at=now, message=message)
                self.active[key] = alert
                changes.append(alert)
        for key in [k for k in self.active if k not in live]:
            fired = self.active.pop(key)
            changes.append(m.Alert(rule=fired.rule, subject=fired.subject, severity=fired.severity, value=fired.value,
                                   threshold=fired.threshold, since=fired.since, at=now, resolved=True,
                                   message=f"resolved: {fired.message}"))
        return changes
