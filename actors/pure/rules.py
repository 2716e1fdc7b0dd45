"""Rule-based stand-ins for a model: deterministic, no I/O, named in config as ``module:function``.

``emergency(ask)``: the answer of a tier's last fallback route when every model route failed
(``metadata.degraded = true``). ``trip_state(ask)``: the two-stage pipeline's stage-1 fallback for
travel asks — the structured state read off the prompt with regular expressions.
"""

from __future__ import annotations

import re

from bus import messages as m

_DAYS = re.compile(r"(\d+)\s*-?\s*(?:days?|nights?)", re.I)
_BUDGET = re.compile(r"(?:\$|usd\s*|€|eur\s*)\s*(\d[\d,]*)|(\d[\d,]*)\s*(?:\$|usd|dollars|€|eur)", re.I)
_TO = re.compile(r"\b(?:to|in|visit(?:ing)?)\s+([A-Z][a-zA-Z]+(?:\s+[A-Z][a-zA-Z]+)?)")
_PACE = (("relaxed", ("relax", "slow", "easy", "chill")), ("packed", ("packed", "busy", "as much as", "intense")))


def _prompt(ask: m.Ask) -> str:
    return " ".join(msg.text() for msg in ask.messages if msg.role == "user")


def emergency(ask: m.Ask) -> str:
    return ("Our assistants are unavailable right now, so this is a short automatic reply: your request "
            "was received and nothing was charged. Please try again in a few minutes.")


def trip_state(ask: m.Ask) -> dict:
    text = _prompt(ask)
    days = _DAYS.search(text)
    budget = _BUDGET.search(text)
    dest = _TO.search(text)
    low = text.lower()
    pace = next((name for name, words in _PACE if any(w in low for w in words)), "moderate")
    amount = None
    if budget:
        amount = float((budget.group(1) or budget.group(2)).replace(",", ""))
    return {
        "destination": dest.group(1) if dest else "unknown",
        "days": max(1, min(60, int(days.group(1)))) if days else 3,
        "budget_usd": amount,
        "pace": pace,
        "confidence": 0.3,  # rules know less than a model: the stage-2 prompt says so
    }
