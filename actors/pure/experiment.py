"""The pure parts of experiments (``[experiments.<name>]``): who is in, how alike two answers are,
and the per-variant summary ``llmbus experiments`` prints.

- ``share(name, key)``: a stable point in [0, 100) for a user (blake2b of experiment and user id), so
  a user stays in the same arm across asks, routers and restarts, and raising the rollout from 10 to
  25 % only adds users (nobody in at 10 % is out at 25 %). Experiments hash apart: being in one
  says nothing about another.
- ``agreement(control, shadow)``: 1.0 or 0.0 for structured output (both have data: the same data,
  keys in any order), else the rapidfuzz similarity (token sort ratio) of the texts in [0, 1];
  None when either side failed.
- ``summarize(events)``: per (experiment, arm): asks, success rate, latency p50/p95, cost, and for
  shadows the mean agreement.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

_SCALE = 100.0 / 2**64


def share(name: str, key: str) -> float:
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def agreement(control_text: str | None, control_data: Any, shadow_text: str | None, shadow_data: Any) -> float | None:
    if control_text is None or shadow_text is None:
        return None
    if control_data is not None and shadow_data is not None:  # structured output: the same data or not
        return 1.0 if canonical(control_data) == canonical(shadow_data) else 0.0
    from rapidfuzz import fuzz  # only where shadows run

    return round(fuzz.token_sort_ratio(control_text, shadow_text) / 100.0, 4)


def quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(events: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per (experiment, arm), in the order first seen; ``events`` are ExperimentEvents."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        groups.setdefault((e.experiment, e.arm), []).append(e)
    rows = []
    for (name, arm), items in groups.items():
        ok = [e for e in items if e.ok]
        latency = sorted(e.latency_ms for e in ok)
        costs = [e.cost_usd for e in items]
        agreements = [e.agreement for e in items if e.agreement is not None]
        rows.append({
            "experiment": name,
            "arm": arm,
            "strategy": ",".join(sorted({e.strategy or "?" for e in items})),
            "asks": len(items),
            "success_rate": round(len(ok) / len(items), 4),
            "p50_ms": quantile(latency, 0.5),
            "p95_ms": quantile(latency, 0.95),
            "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 9),
            "agreement": round(sum(agreements) / len(agreements), 4) if agreements else None,
            "compared": len(agreements),
            "routes": _count(e.route_name for e in items if e.route_name),
        })
    return rows


def _count(names: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return counts
