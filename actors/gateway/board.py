"""What the dashboard shows, kept compact: a pure state fed by bus facts, with the clock passed in.

``actors.gateway.dashboard`` moves messages into it (breaker states from the health KV, the health
report, outcome and alert events, the cost and cache reports, asks and their final replies) and
sends ``snapshot(now)`` to browsers. Nothing here does I/O, so every figure is table-tested.

- **Providers**: breaker state (live from KV), success rate and p50/p95. The rate is over the outcomes
  of the last ``WINDOW_S`` when there are any (what is happening now), else the health actor's totals.
- **Asks**: per strategy, asks per second over the last ``RATE_S``, and answered / failed / cached counts.
- **Fallbacks**, two kinds: a tier's fallback routes (``[tiers.<t>] routes``: the answer's
  ``metadata.route_name``; any route but the tier's first is a fallback), and a provider fallback
  within a strategy (the first choice of the answer's route did not answer: it failed, timed out, or
  was skipped for an open breaker).
- **Failures**: the last ``FAILURES_KEPT`` failed asks, with their ask ids (the page links each to
  its trace).
- **Alerts**: ``<root>.events.alert`` events, keyed by (rule, subject); a resolved one is dropped.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bus import messages as m

WINDOW_S = 60.0  # outcomes kept per provider for the live success rate
RECENT_KEPT = 50_000  # at most this many of them (the rate is then over the last ones)
RATE_S = 10.0  # asks per second are counted over this window
FAILURES_KEPT = 25
ALERTS_KEPT = 200
ROUTE_STEPS_KEPT = 20  # of a failed ask's route, for its trace view when nothing recorded it
ROUTES_KEPT = 8
SKIPPED = ("cancelled",)  # a loser the strategy stopped is not a choice that failed


@dataclass
class ProviderView:
    name: str
    configured: bool = False
    missing_key: str | None = None  # the unset API key variable (here): its actor does not run
    state: str = "unknown"  # until the health KV or report says
    reason: str = ""
    detail: str = ""
    open_until: float = 0.0
    changed_at: float = 0.0
    calls: int = 0  # the health actor's totals
    successes: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    last_error: str = ""
    recent: deque = field(default_factory=deque)  # (at, ok, latency_ms, kind)

    def view(self, now: float) -> dict[str, Any]:
        while self.recent and self.recent[0][0] < now - WINDOW_S:
            self.recent.popleft()
        window = len(self.recent)
        ok = sum(1 for r in self.recent if r[1])
        if window:
            rate, basis = ok / window, f"last {WINDOW_S:.0f} s"
        elif self.calls:
            rate, basis = self.successes / self.calls, "since start"
        else:
            rate, basis = None, ""
        return {"name": self.name, "configured": self.configured, "missing_key": self.missing_key, "state": self.state, "reason": self.reason,
                "detail": self.detail, "retry_in_s": round(max(0.0, self.open_until - now), 1) if self.state == "open" else None,
                "changed_at": self.changed_at, "success_rate": None if rate is None else round(rate, 4),
                "rate_basis": basis, "calls": self.calls, "window_calls": window,
                "window_errors": window - ok, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
                "last_error": self.last_error}


@dataclass
class StrategyView:
    times: deque = field(default_factory=deque)  # when its asks ended, within RATE_S
    asks: int = 0
    answered: int = 0
    failed: int = 0
    cached: int = 0


def route_of(answer_route: list[m.Step]) -> tuple[str, bool]:
    """A route as one line (``a ✗timeout → b``) and whether it used a fallback (its first choice did
    not answer). Calls made for another purpose (review, stage 1 …) and cancelled losers are left out."""
    steps = [s for s in answer_route if s.purpose is None and s.outcome not in SKIPPED]
    if not steps:
        return "", False
    parts = [s.provider if s.outcome == "ok" else f"{s.provider} ✗{s.outcome}" for s in steps]
    return " → ".join(parts), steps[0].outcome != "ok"


class Board:
    def __init__(self, providers: list[str], tier_routes: dict[str, list[str]] | None = None,
                 missing_keys: dict[str, str] | None = None) -> None:
        self.tier_routes = tier_routes or {}  # tier -> its fallback routes' names, in order
        self.route_uses: Counter = Counter()  # (tier, route name) -> answers
        missing = missing_keys or {}
        self.providers: dict[str, ProviderView] = {p: ProviderView(p, configured=True, missing_key=missing.get(p))
                                                   for p in providers}
        self.strategies: dict[str, StrategyView] = {}
        self.failures: deque = deque(maxlen=FAILURES_KEPT)
        self.routes: Counter = Counter()  # provider fallback chains taken
        self.answers = 0  # answers whose route says whether a fallback was used
        self.fallbacks = 0
        self.spend: dict[str, Any] = {"day": "", "by_tier": [], "total_usd": 0.0, "unpriced_calls": 0, "known": False}
        self.cache: dict[str, Any] = {"known": False, "hits": 0, "misses": 0, "hit_rate": None, "entries": 0}
        self.alerts: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0  # grows on every change
        self.urgent = 0  # grows on changes that are pushed at once (breakers, alerts)
        self.sources: dict[str, float] = {}  # what answered last, and when (health, cost, cache, traffic)

    def _changed(self, urgent: bool = False) -> None:
        self.version += 1
        if urgent:
            self.urgent += 1

    def _provider(self, name: str) -> ProviderView:
        view = self.providers.get(name)
        if view is None:
            view = self.providers[name] = ProviderView(name)
        return view

    # --- health ---------------------------------------------------------------------------------
    def breaker(self, b: m.BreakerState) -> bool:
        """A breaker state from the health KV; True when its state changed (pushed at once)."""
        view = self._provider(b.provider)
        moved = view.state != b.state
        view.state, view.reason, view.detail = b.state, b.reason, b.detail
        view.open_until, view.changed_at = b.open_until, b.changed_at
        self._changed(urgent=moved)
        return moved

    def health(self, report: m.HealthReport, now: float) -> bool:
        """The health actor's report (totals and latency); breaker states come from it only for
        providers the KV has not shown yet. True when a state moved."""
        moved = False
        for p in report.providers:
            view = self._provider(p.breaker.provider)
            view.calls, view.successes, view.last_error = p.calls, p.successes, p.last_error
            view.p50_ms, view.p95_ms = p.latency_p50_ms, p.latency_p95_ms
            if view.state == "unknown" or p.breaker.changed_at > view.changed_at:
                moved = self.breaker(p.breaker) or moved
        self.sources["health"] = now
        self._changed()
        return moved

    def outcome(self, o: m.Outcome) -> None:
        if o.kind == m.CANCELLED:  # a loser the strategy stopped (a hedge, a quorum reached): no verdict
            return
        recent = self._provider(o.provider).recent
        recent.append((o.at, o.ok, o.latency_ms, o.kind))
        while recent[0][0] < o.at - WINDOW_S or len(recent) > RECENT_KEPT:  # bounded while nobody looks
            recent.popleft()
        self._changed()

    # --- asks (counted when their final reply passes: the answer names the strategy that ran) ------
    def _strategy(self, name: str, at: float) -> StrategyView:
        view = self.strategies.setdefault(name or "default", StrategyView())
        view.times.append(at)
        while view.times[0] < at - RATE_S:
            view.times.popleft()
        view.asks += 1
        return view

    def answered(self, strategy: str, *, cached: bool, route: list[m.Step], at: float,
                 metadata: dict[str, Any] | None = None) -> None:
        view = self._strategy(strategy, at)
        view.answered += 1
        view.cached += cached
        meta = metadata or {}
        if isinstance(meta.get("route_name"), str):
            self.route_uses[(str(meta.get("tier") or "-"), meta["route_name"])] += 1
        line, fell_back = route_of(route) if not cached else ("", False)  # a cached answer made no call
        if line:
            self.answers += 1
            if fell_back:
                self.fallbacks += 1
                self.routes[line] += 1
        self._changed()

    def failed(self, strategy: str, *, ask_id: str, kind: str, message: str, provider: str | None, at: float,
               count: bool = True, route: list[m.Step] = ()) -> None:
        """A failed ask; ``count=False`` lists it without counting it (one read back from the recording).
        Its route (what was tried) is kept for ``failure(ask_id)``, not sent to browsers."""
        if count:
            self._strategy(strategy, at).failed += 1
        self.failures.appendleft({"ask_id": ask_id, "at": at, "strategy": strategy or "default", "kind": kind,
                                  "message": message[:300], "provider": provider,
                                  "route": [{"provider": s.provider, "outcome": s.outcome, "ms": s.ms,
                                             "detail": (s.detail or "")[:300]} for s in route[:ROUTE_STEPS_KEPT]]})
        self._changed()

    def failure(self, ask_id: str) -> dict[str, Any] | None:
        """What the dashboard saw of a recent failed ask (its route included), or None."""
        return next((f for f in self.failures if f["ask_id"] == ask_id), None)

    # --- cost, cache, alerts ----------------------------------------------------------------------
    def cost(self, report: m.CostReport, day: str, now: float) -> None:
        self.spend = {"day": day, "known": True, "total_usd": report.total.cost_usd,
                      "unpriced_calls": report.total.unpriced_calls,
                      "by_tier": [{"tier": line.key, "usd": line.cost_usd, "calls": line.calls, "asks": line.asks}
                                  for line in sorted(report.lines, key=lambda x: -x.cost_usd)]}
        self.sources["cost"] = now
        self._changed()

    def cache_stats(self, stats: m.CacheStats, now: float) -> None:
        t = stats.total
        looked = t.hits + t.misses
        self.cache = {"known": True, "hits": t.hits, "misses": t.misses, "coalesced": t.coalesced,
                      "entries": stats.entries, "hit_rate": round(t.hits / looked, 4) if looked else None}
        self.sources["cache"] = now
        self._changed()

    def alert(self, event: dict[str, Any], now: float) -> bool:
        """An alert event (issue 20's ``<root>.events.alert``); False when it is not one."""
        rule, subject = event.get("rule"), event.get("subject")
        if not isinstance(rule, str) or not isinstance(subject, (str, type(None))):
            return False
        key = (rule[:100], (subject or "")[:200])
        rule, subject = key
        if event.get("resolved"):
            self.alerts.pop(key, None)
        else:
            since = event.get("since")
            self.alerts[key] = {"rule": rule, "subject": subject or "", "severity": str(event.get("severity") or "warning"),
                                "value": event.get("value"), "threshold": event.get("threshold"),
                                "since": since if isinstance(since, (int, float)) and since > 0 else now,
                                "message": str(event.get("message") or "")[:300]}
            while len(self.alerts) > ALERTS_KEPT:  # a flood of distinct alerts: the oldest go
                del self.alerts[min(self.alerts, key=lambda k: self.alerts[k]["since"])]
        self._changed(urgent=True)
        return True

    # --- what browsers get ------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        strategies = []
        for name, s in sorted(self.strategies.items()):
            while s.times and s.times[0] < now - RATE_S:
                s.times.popleft()
            strategies.append({"strategy": name, "per_s": round(len(s.times) / RATE_S, 2), "asks": s.asks,
                               "answered": s.answered, "failed": s.failed, "cached": s.cached})
        configured = [v for v in self.providers.values() if v.configured]
        others = sorted((v for v in self.providers.values() if not v.configured), key=lambda v: v.name)
        severity = {"critical": 0, "error": 1, "warning": 2}
        per_tier = Counter()
        for (tier, _), n in self.route_uses.items():
            per_tier[tier] += n
        tier_routes = [{"tier": tier, "route": route, "answers": n, "share": round(n / per_tier[tier], 4),
                        "fallback": route != (self.tier_routes.get(tier) or [route])[0]}
                       for (tier, route), n in sorted(self.route_uses.items())]
        return {
            "version": self.version,
            "at": now,
            "providers": [v.view(now) for v in [*configured, *others]],
            "strategies": strategies,
            "asks_per_s": round(sum(s["per_s"] for s in strategies), 2),
            "cache": self.cache,
            "spend": self.spend,
            "fallback": {"answers": self.answers, "fallbacks": self.fallbacks,
                         "share": round(self.fallbacks / self.answers, 4) if self.answers else None,
                         "routes": [{"route": r, "count": n} for r, n in self.routes.most_common(ROUTES_KEPT)],
                         "tier_routes": tier_routes,
                         "tier_fallbacks": sum(r["answers"] for r in tier_routes if r["fallback"])},
            "failures": [{k: v for k, v in f.items() if k != "route"} for f in self.failures],
            "alerts": sorted(self.alerts.values(), key=lambda a: (severity.get(a["severity"], 3), -a["since"])),
            "sources": dict(self.sources),
        }
