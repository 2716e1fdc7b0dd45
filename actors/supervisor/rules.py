"""Rule-based validators for structured answers (``[supervisor] validators = ["module:function"]``).

Each takes the answer's data and returns its findings: ``(where, detail)`` pairs (or strings, for
the whole answer); an empty list passes. Data of another shape passes: a rule checks what it knows.
"""

from __future__ import annotations

from typing import Any


def budget_sums(data: Any) -> list[tuple[str, str]]:
    """``items[].cost`` must add up to ``total`` (to the cent)."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or "total" not in data:
        return []
    try:
        spent = sum(float(i.get("cost", 0)) for i in data["items"] if isinstance(i, dict))
        total = float(data["total"])
    except (TypeError, ValueError):
        return [("$.total", "total or an item's cost is not a number")]
    if abs(spent - total) > 0.005:
        return [("$.total", f"the items cost {spent:.2f} but total says {total:.2f}")]
    return []


def hours_in_order(data: Any) -> list[tuple[str, str]]:
    """Each part that is a list of ``{"start": "HH:MM", "end": "HH:MM"}`` runs forward without overlaps."""
    found = []
    if not isinstance(data, dict):
        return found
    for key, slots in data.items():
        if not isinstance(slots, list) or not all(isinstance(s, dict) and "start" in s and "end" in s for s in slots):
            continue
        last = ""
        for n, s in enumerate(slots):
            start, end = str(s["start"]), str(s["end"])
            if end <= start or start < last:
                found.append((f"$.{key}[{n}]", f"{start}–{end} does not run forward after {last or 'the start'}"))
            last = end
    return found
