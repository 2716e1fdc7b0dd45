"""Best match: the consensus scatter, then the single best answer as it is (nothing merged).

Each usable answer (with a schema: an object the schema accepts) scores its calibrated confidence
× its provider's reliability (learned by consensus, ``consensus.reliability_of``: shared in KV): the calibrated
confidence is what the provider said, mapped through what its stated confidences have been worth
(``Reliability.stated_worth``: as said until there is data); the reliability its mean learned
accuracy over the schema's fields. The highest score wins; ties go
to the earlier answer. ``metadata.best_match`` says why: the winner, and every answer's score.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bus import messages as m
from actors.pure import canonical
from actors.pure.vote import Reliability
from actors.strategies.base import Action, Done, register
from actors.strategies.consensus import LEARNED, Scatter, ScatterOptions, reliability_of, stated_confidence


class BestMatchOptions(ScatterOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    quorum: int = 1


def schema_valid(data: Any, schema: dict[str, Any] | None) -> bool:
    if schema is None:
        return True
    import jsonschema

    try:
        return jsonschema.Draft202012Validator(schema).is_valid(data)
    except jsonschema.SchemaError:
        return True  # a schema the validator cannot read: the provider already accepted the answer


def rank(good: list[m.Completion], schema: dict[str, Any] | None,
         reliability: Reliability = LEARNED) -> tuple[int | None, list[dict[str, Any]]]:
    """(index of the best answer or None, every answer's score and reasons)."""
    fields = list(canonical.kinds_of(schema)) or ["_answer"]
    rows: list[dict[str, Any]] = []
    best, best_score = None, -1.0
    for i, c in enumerate(good):
        valid = schema_valid(c.data, schema) if schema is not None else bool(c.text.strip())
        stated = stated_confidence(c)
        rel = sum(reliability.accuracy(c.provider, f) for f in fields) / len(fields)
        calibrated = reliability.stated_worth(c.provider, stated)
        score = calibrated * rel if valid else 0.0
        rows.append({"provider": c.provider, "valid": valid, "stated_confidence": stated,
                     "calibrated_confidence": round(calibrated, 4), "reliability": round(rel, 4),
                     "score": round(score, 4)})
        if valid and score > best_score + 1e-12:
            best, best_score = i, score
    return best, rows


def best_of(good: list[m.Completion], schema: dict[str, Any] | None, *, why: str = "",
            reliability: Reliability = LEARNED) -> Done | None:
    """The Done for the best answer (None when no answer is valid)."""
    best, rows = rank(good, schema, reliability)
    if best is None:
        return None
    winner = good[best]
    meta = {"best_match": {"winner": winner.provider, "score": rows[best]["score"],
                           "why": why or "highest calibrated confidence × reliability among valid answers",
                           "answers": rows}}
    return Done(msgspec.structs.replace(winner, confidence=rows[best]["calibrated_confidence"]),
                providers=[winner.provider], metadata=meta, confidence=rows[best]["calibrated_confidence"])


@register
class BestMatch(Scatter):
    name = "best_match"
    description = "every candidate in parallel; the valid answer with the highest calibrated confidence × reliability"
    Options = BestMatchOptions

    def close(self, now: float, timed_out: bool) -> list[Action]:
        good = self.good()
        if len(good) < self.options.quorum:
            return [self.too_few(len(good), timed_out)]
        done = best_of(good, self.plan.ask.schema, reliability=reliability_of(self.plan))
        if done is None:
            return [Done(m.Failure(kind=m.INVALID_OUTPUT,
                                   message=f"no answer is valid against the schema ({self.outcomes()})"))]
        return [done]
