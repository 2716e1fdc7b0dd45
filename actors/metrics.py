"""The process's metrics: what every actor counts, exported for Prometheus and for ``llmbus status``.

One module holds every metric (names fixed: issue 20's ``docs/alerts.yml`` and other helpers use
them). Actors record with one call each (``asked``, ``provider_call``, ``breaker``, ``cache``,
``cost``, ``fallback_route``, ``budget``); the figures live in plain dicts of this process —
a dict increment costs ~0.1 µs where a prometheus-client labelled child costs ~0.7 µs and a
histogram ~1.5 µs (measured here), and an ask touches several. prometheus-client (~65 ms to
import) is loaded only when the endpoint starts (``serve``): its collector turns the dicts into
metric families at scrape time, so the hot path never sees it.

Exported (``llmbus_`` prefix):
- ``asks_total{strategy,tier,outcome}`` (outcome: ``ok`` or the Failure kind), ``ask_seconds{strategy}``
- ``provider_calls_total{provider,outcome}``, ``provider_call_seconds{provider}``
- ``breaker_state{provider}`` (0 closed, 1 half_open, 2 open)
- ``cache_events_total{event}`` (hit, miss, coalesced, stored)
- ``cost_usd_total{provider,tier}``, ``budget_spent_ratio{scope}`` (spent / limit, scope ``user:alice:day``)
- ``fallback_routes_total{tier,route}``
- ``quality_score`` (histogram), ``quality_reviews_total{first_pass}`` ("true" | "false")
- ``usage_dropped_total{provider}``: usage events a provider gave up on (the events stream did not
  acknowledge them within its outbox's bounds, ``actors/providers/events.py``): calls never billed

One endpoint per process (``serve``): in ``llmbus up`` every actor counts into the same dicts. The
figures have no root label: one process serves one root in a deployment. ``snapshot()`` is the same
numbers as JSON, served in every actor's ``$SRV.STATS`` data (``llmbus status`` reads them over the
bus and ``merge``s them, deduplicated by ``PROCESS``: no Prometheus needed).
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from typing import Any

from bus.rpc import new_id

PROCESS = f"{os.getpid()}-{new_id()[-8:]}"  # one per process: status counts a process once

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SCORES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BREAKER = {"closed": 0, "half_open": 1, "open": 2}


class Buckets:
    """One histogram series: counts per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


# name -> (help, label names, kind, series: labels tuple -> value | Buckets)
ASKS: dict[tuple[str, str, str], int] = {}
ASK_SECONDS: dict[tuple[str], Buckets] = {}
PROVIDER_CALLS: dict[tuple[str, str], int] = {}
PROVIDER_SECONDS: dict[tuple[str], Buckets] = {}
BREAKER_STATE: dict[tuple[str], int] = {}
CACHE_EVENTS: dict[tuple[str], int] = {}
COST_USD: dict[tuple[str, str], float] = {}
FALLBACK_ROUTES: dict[tuple[str, str], int] = {}
QUALITY_SCORE: dict[tuple, Buckets] = {}
QUALITY_REVIEWS: dict[tuple[str], int] = {}
BUDGET_RATIO: dict[tuple[str], float] = {}
USAGE_DROPPED: dict[tuple[str], int] = {}

FAMILIES: dict[str, tuple[str, tuple[str, ...], str, dict]] = {
    "llmbus_asks": ("asks answered, by strategy, tier and outcome (ok or the Failure kind)",
                    ("strategy", "tier", "outcome"), "counter", ASKS),
    "llmbus_ask_seconds": ("time from an ask's arrival at the router to its reply", ("strategy",), "histogram",
                           ASK_SECONDS),
    "llmbus_provider_calls": ("provider calls, by outcome (ok or the Failure kind)", ("provider", "outcome"),
                              "counter", PROVIDER_CALLS),
    "llmbus_provider_call_seconds": ("provider call latency, at the provider actor", ("provider",), "histogram",
                                     PROVIDER_SECONDS),
    "llmbus_breaker_state": ("circuit breaker: 0 closed, 1 half_open, 2 open", ("provider",), "gauge", BREAKER_STATE),
    "llmbus_cache_events": ("answer cache: hit, miss, coalesced, stored", ("event",), "counter", CACHE_EVENTS),
    "llmbus_cost_usd": ("priced usage in USD, by provider and tier", ("provider", "tier"), "counter", COST_USD),
    "llmbus_fallback_routes": ("answers made by each of a tier's fallback routes", ("tier", "route"), "counter",
                               FALLBACK_ROUTES),
    "llmbus_quality_score": ("the supervisor's score of reviewed answers", (), "histogram", QUALITY_SCORE),
    "llmbus_quality_reviews": ("reviewed answers, by whether the first draft passed", ("first_pass",), "counter",
                               QUALITY_REVIEWS),
    "llmbus_budget_spent_ratio": ("a budget's spend over its limit (scope = scope:name:period)", ("scope",), "gauge",
                                  BUDGET_RATIO),
    "llmbus_usage_dropped": ("usage events a provider gave up on: the events stream did not acknowledge them in time",
                             ("provider",), "counter", USAGE_DROPPED),
}


# --- recording (one call per hook; nothing here allocates a label object per call) ----------------


def asked(strategy: str, tier: str | None, result: Any, seconds: float) -> None:
    """An ask the router answered: its outcome, latency, and (reviewed) quality."""
    failure = result.__class__.__name__ == "Failure"
    key = (strategy, tier or "", result.kind if failure else "ok")
    ASKS[key] = ASKS.get(key, 0) + 1
    hist = ASK_SECONDS.get((strategy,))
    if hist is None:
        hist = ASK_SECONDS[(strategy,)] = Buckets(SECONDS)
    hist.observe(seconds)
    if not failure and result.metadata:
        quality = result.metadata.get("quality")
        if isinstance(quality, dict):
            reviewed(quality.get("score"), bool(quality.get("first_pass")))


def reviewed(score: float | None, first_pass: bool) -> None:
    key = ("true" if first_pass else "false",)
    QUALITY_REVIEWS[key] = QUALITY_REVIEWS.get(key, 0) + 1
    if isinstance(score, (int, float)):
        hist = QUALITY_SCORE.get(())
        if hist is None:
            hist = QUALITY_SCORE[()] = Buckets(SCORES)
        hist.observe(float(score))


def provider_call(provider: str, kind: str | None, latency_ms: float) -> None:
    """One provider call at its actor (``kind`` None: answered)."""
    key = (provider, kind or "ok")
    PROVIDER_CALLS[key] = PROVIDER_CALLS.get(key, 0) + 1
    hist = PROVIDER_SECONDS.get((provider,))
    if hist is None:
        hist = PROVIDER_SECONDS[(provider,)] = Buckets(SECONDS)
    hist.observe(latency_ms / 1000.0)


def breaker(provider: str, state: str) -> None:
    BREAKER_STATE[(provider,)] = BREAKER.get(state, 0)


def cache(event: str) -> None:
    """``hit``, ``miss``, ``coalesced`` or ``stored``."""
    key = (event,)
    CACHE_EVENTS[key] = CACHE_EVENTS.get(key, 0) + 1


def cost(provider: str, tier: str | None, usd: float | None) -> None:
    if usd:
        key = (provider, tier or "")
        COST_USD[key] = COST_USD.get(key, 0.0) + usd


def fallback_route(tier: str | None, route: str) -> None:
    key = (tier or "", route)
    FALLBACK_ROUTES[key] = FALLBACK_ROUTES.get(key, 0) + 1


def budget(scope: str, spent_usd: float, limit_usd: float) -> None:
    if limit_usd > 0:
        BUDGET_RATIO[(scope,)] = spent_usd / limit_usd


def usage_dropped(provider: str, n: int) -> None:
    """``n`` usage events of ``provider`` that will never reach the ledger."""
    key = (provider,)
    USAGE_DROPPED[key] = USAGE_DROPPED.get(key, 0) + n


def reset() -> None:
    """Forget every figure (tests)."""
    for _, _, _, series in FAMILIES.values():
        series.clear()


# --- reading -------------------------------------------------------------------------------------


def snapshot() -> dict:
    """Every figure as JSON: ``{"process", "metrics": {family: [[labels…, value]]}}``; a histogram's
    value is ``[count, sum, [count per bucket…]]`` (its family's bounds, then +Inf)."""
    out: dict[str, list] = {}
    for name, (_, _, kind, series) in FAMILIES.items():
        rows = []
        for labels, value in list(series.items()):  # a copy: the loop may add a series meanwhile
            if kind == "histogram":
                value = [sum(value.counts), round(value.sum, 6), list(value.counts)]
            rows.append([*labels, value])
        if rows:
            out[name] = rows
    return {"process": PROCESS, "metrics": out}


def merge(snapshots: list[dict]) -> dict[str, dict[tuple, Any]]:
    """The fleet's figures from the snapshots of its actors (one per process): counters and
    histograms summed, gauges the highest (a breaker open anywhere is open)."""
    seen: set[str] = set()
    total: dict[str, dict[tuple, Any]] = {}
    for snap in snapshots:
        if not isinstance(snap, dict) or snap.get("process") in seen:
            continue
        seen.add(snap.get("process"))
        for name, rows in (snap.get("metrics") or {}).items():
            family = FAMILIES.get(name)
            if family is None:
                continue
            kind = family[2]
            into = total.setdefault(name, {})
            for row in rows:
                labels, value = tuple(row[:-1]), row[-1]
                if kind == "histogram":  # (count, sum, counts per bucket)
                    count, s, buckets = into.get(labels, (0, 0.0, []))
                    more = value[2] if len(value) > 2 else []
                    if not buckets:
                        buckets = list(more)
                    elif len(more) == len(buckets):
                        buckets = [a + b for a, b in zip(buckets, more)]
                    into[labels] = (count + value[0], s + value[1], buckets)
                elif kind == "gauge":
                    into[labels] = max(into.get(labels, value), value)
                else:
                    into[labels] = into.get(labels, 0) + value
    return total


def quantile(family: str, buckets: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile (None: no observation; ``inf``:
    beyond the last bound)."""
    bounds = {"llmbus_quality_score": SCORES}.get(family, SECONDS)
    total = sum(buckets)
    if not total or len(buckets) != len(bounds) + 1:
        return None
    running = 0
    for bound, n in zip((*bounds, float("inf")), buckets):
        running += n
        if running >= q * total:
            return bound
    return float("inf")


# --- the Prometheus endpoint ---------------------------------------------------------------------

_served: dict[str, Any] = {}
_lock = threading.Lock()


class _Collector:
    """prometheus-client's view of the dicts above (read at scrape time, in the server's thread)."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        for name, (doc, labels, kind, series) in FAMILIES.items():
            items = list(series.items())
            if kind == "counter":
                fam = CounterMetricFamily(name, doc, labels=labels)
                for key, value in items:
                    fam.add_metric(list(key), value)
            elif kind == "gauge":
                fam = GaugeMetricFamily(name, doc, labels=labels)
                for key, value in items:
                    fam.add_metric(list(key), value)
            else:
                fam = HistogramMetricFamily(name, doc, labels=labels)
                for key, b in items:
                    counts, running, buckets = list(b.counts), 0, []
                    for bound, n in zip((*b.bounds, float("inf")), counts):
                        running += n
                        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
                    fam.add_metric(list(key), buckets, b.sum)
            yield fam


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Start this process's endpoint (``GET /metrics``) on ``port`` (0: any free port) once;
    returns the port it listens on. A second call returns the first endpoint's port."""
    with _lock:
        if "port" in _served:
            return _served["port"]
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        server, thread = start_http_server(port, addr=host, registry=registry)
        _served.update(port=server.server_port, server=server, thread=thread)
        return server.server_port


def serving_port() -> int | None:
    return _served.get("port")
