"""Consensus and self-consistency: the same ask to N callers in parallel, merged field by field.

The scatter (``Scatter``, shared with best_match and synthesis): one call per candidate (``samples``
calls each: the same provider several times is self-consistency, sampled at the ask's
temperature). It closes at ``quorum`` usable answers plus ``patience_ms`` (a timer; 0 closes at
once), when no call is left open, or at the deadline; the runner cancels the stragglers. A
failure, a timeout or output without a JSON object is absent. Fewer usable answers than the
quorum is ``Failure(all_failed)`` naming what each call did.

The merge is ``actors.pure.vote.merge_field`` per field, the kinds from the ask's schema
(``canonical.kinds_of``; fields it does not declare by name and values). A null field is that
provider abstaining. A merged field that abstains is null — unless the schema says it may not be:
a field the schema requires and does not let be null keeps its best-supported candidate (as if
``min_confidence`` were 0; a tie: the most reliable voter's), with the abstention's reason and
``kept`` in its report, so the answer stays schema-valid (when every provider gave null there is
nothing to keep: it stays null); a non-nullable field that is not required is left out. The Answer: ``data`` the merged object (a field below ``min_confidence`` is
null), ``confidence`` the lowest posterior among the fields it emitted, ``providers`` those whose
answers formed an emitted value, ``metadata.consensus`` per field: value, confidence, support,
dissent (provider and value), or the reason it abstained.

Reliability is learned online from the merges themselves (each answer counted right with its
cluster's posterior, over a decaying window) into ``plan.live.reliability``: a router's view of
the counts every router shares in KV (``actors.router.reliability``); ``LEARNED``, one per
process, where no router runs the policy (table tests, the bench's simulations).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec

from bus import messages as m
from actors.pure import canonical
from actors.pure.vote import FieldResult, Reliability, Vote, VoteOptions, merge_field, vote_shares
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, Wake, WakeAt, register

# learned reliability per (provider, field), shared by the asks of this process
LEARNED = Reliability(window=500.0)


def reliability_of(plan) -> Reliability:
    """The router's shared reliability (``Live.reliability``), else this process's ``LEARNED``."""
    shared = getattr(plan.live, "reliability", None)
    return shared if shared is not None else LEARNED


class ScatterOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    quorum: int = 2  # usable answers needed
    patience_ms: float = 200.0  # after the quorum, wait this long for the others (0: close at once)
    samples: int = 1  # calls per candidate (more than 1: self-consistency)

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise ValueError("`quorum` must be at least 1")
        if self.samples < 1:
            raise ValueError("`samples` must be at least 1")
        if self.patience_ms < 0:
            raise ValueError("`patience_ms` must not be negative")


class ConsensusOptions(ScatterOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    min_confidence: float = 0.5  # a field whose winner's posterior is below it abstains (null)
    alternatives: float = 4.0  # wrong values a provider may plausibly give (the vote's weight)
    day_first: bool = False  # a numeric a/b/yyyy date that could be either is read day-first
    name_threshold: float = 0.96  # Jaro-Winkler for a misspelt name token (person, organization)
    tolerance: float = 0.0  # numbers: relative tolerance
    learn: bool = True  # update the learned reliability from each merge

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quorum < 2:
            raise ValueError("`quorum` must be at least 2 for a consensus")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError("`min_confidence` must be in [0, 1]")

    def vote(self) -> VoteOptions:
        return VoteOptions(min_confidence=self.min_confidence, alternatives=self.alternatives,
                           day_first=self.day_first, name_threshold=self.name_threshold, tolerance=self.tolerance)


def usable(result: Any, structured: bool) -> bool:
    if not isinstance(result, m.Completion):
        return False
    return isinstance(result.data, dict) if structured else bool(result.text.strip())


class Scatter(Policy):
    """Calls every candidate (``samples`` times each) and closes at quorum + patience, when nothing
    is open, or at the deadline; subclasses answer with ``close(now, timed_out)``."""

    def __init__(self, plan) -> None:
        super().__init__(plan)
        self.patience_set = False
        self.closed = False

    @property
    def structured(self) -> bool:
        return self.plan.ask.schema is not None

    def calls(self, now: float) -> list[Call]:
        n = self.options.samples
        return [Call(str(i * n + s), p, deadline=self.call_deadline(now))
                for i, p in enumerate(self.plan.candidates) for s in range(n)]

    def call_deadline(self, now: float) -> float | None:
        return None

    def begin(self, now: float) -> list[Action]:
        return list(self.calls(now))

    def good(self) -> list[m.Completion]:
        structured = self.structured
        return [r.result for r in self.replies if usable(r.result, structured)]

    def decide(self, event: Event, now: float) -> list[Action]:
        if self.closed:
            return self.after_close(event, now)
        kind = type(event)
        if kind is Deadline:
            return self._close(now, timed_out=True)
        if kind is Wake:
            return self._close(now, timed_out=False) if self.patience_set else []
        if kind is Reply:
            if self.open == 0:
                return self._close(now, timed_out=False)
            if len(self.good()) >= self.options.quorum:
                if self.options.patience_ms <= 0:
                    return self._close(now, timed_out=False)
                if not self.patience_set:
                    self.patience_set = True
                    return [WakeAt(now + self.options.patience_ms / 1000.0)]
        return []

    def _close(self, now: float, timed_out: bool) -> list[Action]:
        self.closed = True
        return self.close(now, timed_out)

    def close(self, now: float, timed_out: bool) -> list[Action]:
        raise NotImplementedError

    def after_close(self, event: Event, now: float) -> list[Action]:
        """Events after the scatter closed (a second stage's reply): none by default."""
        return [Done(self.failure("budget spent", kind=m.TIMEOUT))] if type(event) is Deadline else []

    def too_few(self, n: int, timed_out: bool) -> Done:
        kind = m.ALL_FAILED
        return Done(m.Failure(kind=kind, message=f"{n} usable answer(s), quorum {self.options.quorum}"
                              f"{' at the deadline' if timed_out else ''} ({self.outcomes()})"))

    def outcomes(self) -> str:
        structured = self.structured
        parts = []
        for r in self.replies:
            if isinstance(r.result, m.Failure):
                parts.append(f"{r.target}: {r.result.kind}")
            elif not usable(r.result, structured):
                parts.append(f"{r.target}: {'no JSON object' if structured else 'empty'}")
            else:
                parts.append(f"{r.target}: ok")
        parts += ["(not answered)"] * self.open
        return ", ".join(parts) or "no provider was called"


def stated_confidence(c: m.Completion) -> float | None:
    data = c.data
    if isinstance(data, dict):
        v = data.get("confidence")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0:
            return float(v)
    return c.confidence


def _nullable(sub: Any) -> bool:
    if not isinstance(sub, dict):
        return True
    if "const" in sub:
        return sub["const"] is None
    if "enum" in sub:
        return None in sub["enum"]
    for key in ("anyOf", "oneOf"):
        if isinstance(sub.get(key), list):
            return any(_nullable(b) for b in sub[key])
    t = sub.get("type")
    return t is None or t == "null" or (isinstance(t, list) and "null" in t)


def not_nullable(schema: dict[str, Any] | None) -> tuple[set[str], set[str]]:
    """(the schema's properties that may not be null, those of them it also requires)."""
    props = (schema or {}).get("properties") or {}
    if not isinstance(props, dict):
        return set(), set()
    no_null = {n for n, sub in props.items() if not _nullable(sub)}
    required = (schema or {}).get("required") or []
    return no_null, {n for n in required if n in no_null} if isinstance(required, list) else set()


def best_candidate(name: str, kind: str, votes: list[Vote], reliability: Reliability, vote: VoteOptions):
    """The value a field would have had without ``min_confidence`` (a tie: the most reliable
    voter's), or None when every voter abstained."""
    result, _ = merge_field(name, kind, votes, reliability, dataclasses.replace(vote, min_confidence=0.0))
    if result.value is not None:
        return result
    present = [v for v in votes if v.value is not None]
    if not present:
        return None
    top = max(present, key=lambda v: reliability.calibrated(v.voter, name, v.confidence))
    return FieldResult(top.value, reliability.calibrated(top.voter, name, top.confidence), [top.voter],
                       [(v.voter, v.value) for v in present if v is not top])


def merge_answers(good: list[m.Completion], schema: dict[str, Any] | None, options: ConsensusOptions,
                  reliability: Reliability, learn: bool) -> tuple[dict[str, Any], dict[str, Any], list[str], float]:
    """(merged data, per-field report, providers in it, confidence) of the usable answers."""
    kinds = canonical.kinds_of(schema)
    names = list(kinds)
    for c in good:
        names.extend(k for k in c.data if k not in kinds and k != "confidence" and k not in names)
    vote = options.vote()
    stated = [stated_confidence(c) for c in good]
    no_null, must_have = not_nullable(schema)
    data: dict[str, Any] = {}
    report: dict[str, Any] = {}
    providers: list[str] = []
    lowest = 1.0
    for name in names:
        votes = [Vote(c.provider, c.data.get(name), s) for c, s in zip(good, stated)]
        kind = kinds.get(name) or canonical.infer_kind(name, [v.value for v in votes if isinstance(v.value, str)])
        result, clusters = merge_field(name, kind, votes, reliability, vote)
        report[name] = {"kind": kind, **result.report()}
        if result.value is None and name in must_have:  # abstaining would make the answer invalid
            kept = best_candidate(name, kind, votes, reliability, vote)
            if kept is not None:
                reason, result = result.reason, kept
                report[name] = {"kind": kind, **kept.report(), "reason": reason,
                                "kept": "the schema requires a non-null value: the best-supported one is kept"}
        if result.value is not None or name not in no_null or name in must_have:
            data[name] = result.value  # (a field that may be absent but not null is left out)
        if result.value is not None:
            lowest = min(lowest, result.confidence)
            providers.extend(p for p in result.members if p not in providers)
        if learn:
            shares = vote_shares(votes)
            for c in clusters:
                for i in c.members:
                    v = votes[i]
                    reliability.observe(v.voter, name, v.confidence, c.posterior, shares[i])
    return data, report, providers, (lowest if providers else 0.0)


@register
class Consensus(Scatter):
    name = "consensus"
    description = "the same schema to every candidate in parallel; fields merged by typed vote, with abstain"
    Options = ConsensusOptions

    def close(self, now: float, timed_out: bool) -> list[Action]:
        good = self.good()
        if len(good) < self.options.quorum:
            return [self.too_few(len(good), timed_out)]
        if not self.structured:
            good = [msgspec.structs.replace(c, data={"text": c.text}) for c in good]
        data, report, providers, confidence = merge_answers(good, self.plan.ask.schema, self.options,
                                                            reliability_of(self.plan),
                                                            self.options.learn)
        base = good[0]
        if not self.structured:
            text, data = data.get("text") or "", None
            if not text:  # a tie (or too little agreement): an empty answer helps nobody; keep the best one
                votes = [Vote(c.provider, c.data.get("text"), stated_confidence(c)) for c in good]
                kept = best_candidate("text", report["text"]["kind"], votes, reliability_of(self.plan),
                                      self.options.vote())
                if kept is not None:
                    text, providers, confidence = kept.value, list(kept.members), kept.confidence
                    report["text"]["kept"] = "no text was agreed on: the best-supported answer is kept"
        else:
            text = json.dumps(data, ensure_ascii=False)
        result = msgspec.structs.replace(base, data=data, text=text, confidence=confidence)
        meta = {"consensus": report, "answers": len(good), "calls": len(self.replies) + self.open,
                "quorum": self.options.quorum}
        if timed_out:
            meta["closed_at_deadline"] = True
        return [Done(result, providers=providers or [c.provider for c in good][:1], metadata=meta,
                     confidence=confidence)]


class SelfConsistencyOptions(ConsensusOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    samples: int = 5
    quorum: int = 3


@register
class SelfConsistency(Consensus):
    name = "self_consistency"
    description = "one provider sampled several times (the ask's temperature); its answers merged by consensus"
    Options = SelfConsistencyOptions

    def calls(self, now: float) -> list[Call]:
        return [Call(str(s), self.plan.candidates[0]) for s in range(self.options.samples)]
