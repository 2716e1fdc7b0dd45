"""Review (the supervisor loop): drafts in parallel, a supervisor's review, targeted regeneration of
only the weak parts by the provider the verdict names, re-review — then the merged answer.

1. Drafts: every candidate answers the ask, in parallel, within ``draft_share`` of the budget
   (only its own parts, when ``parts`` names them: a specialist worker drafts what it knows).
   Partial failures are kept: ``metadata.review`` says who answered, who did not, and which
   providers drafted each part.
2. Review: a ``Review`` (the ask + the drafts) to ``<root>.supervisor.review``.
3. Regeneration: for each of the verdict's ``regenerate`` requests (a part, a provider, a fix),
   that provider is asked again, with the ask's messages, the fix as a system message and — for a
   structured ask — a schema for that one part (``{"fix": <the part's schema>}``); its answer
   replaces that part of that provider's draft. Nothing else is called again.
4. Re-review, for at most ``cycles`` regenerations (None: the tier's — free 0, pro 1, premium 2 —
   else 1); it stops early once the score reaches ``quality_target`` (None: the tier's — pro 0.7,
   premium 0.9 — else 0.8), or when the verdict asks for nothing.
5. Degradation: if the supervisor fails, or less than ``min_review_ms`` is left, or the deadline
   comes, the answer is the last verdict's merge, else the best draft (best_match), with
   ``metadata.degraded = {"reason": …}``. Only no usable draft at all is a Failure.

``metadata.quality``: the score, rubric, cycles run, issues fixed (found in one review, gone in the
next), issues left, who judged and whether the first pass already met the target.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bus import messages as m
from bus.subjects import SUPERVISOR_REVIEW
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Progress, Reply, register
from actors.strategies.best_match import best_of
from actors.strategies.consensus import reliability_of

# tier -> (review cycles, quality target): the issue's table; a tier's own ``options`` win
TIER_DEFAULTS: dict[str, tuple[int, float]] = {"free": (0, 1.0), "pro": (1, 0.7), "premium": (2, 0.9)}
DEFAULT_CYCLES, DEFAULT_TARGET = 1, 0.8
DRAFT, REVIEW, REGEN = "draft", "review", "regenerate"
WHOLE = "$"


class ReviewOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cycles: int | None = None  # regenerate-and-review rounds at most (None: the tier's)
    quality_target: float | None = None  # stop once the score reaches it (None: the tier's)
    draft_share: float = 0.45  # share of the budget the drafts may take
    min_review_ms: float = 50.0  # less time than this left: no (further) review, degrade
    # provider -> the parts (top-level schema properties) it drafts; absent: every part. A
    # specialist worker (a database, a calculator) drafts only what it knows.
    parts: dict[str, list[str]] = {}

    def __post_init__(self) -> None:
        if self.cycles is not None and self.cycles < 0:
            raise ValueError("`cycles` must be >= 0")
        if self.quality_target is not None and not 0.0 <= self.quality_target <= 1.0:
            raise ValueError("`quality_target` must be in [0, 1]")
        if not 0.0 < self.draft_share < 1.0:
            raise ValueError("`draft_share` must be in (0, 1)")


def restrict(schema: dict[str, Any] | None, parts: list[str] | None) -> dict[str, Any] | None:
    """``schema`` with only ``parts`` among its properties (and its required ones)."""
    if schema is None or not parts or not isinstance(schema.get("properties"), dict):
        return None
    props = {k: v for k, v in schema["properties"].items() if k in parts}
    required = [k for k in schema.get("required", []) if k in props]
    return {**schema, "properties": props, "required": required}


def part_schema(schema: dict[str, Any] | None, part: str) -> dict[str, Any] | None:
    """The schema a regeneration of ``part`` answers: ``{"fix": <the part's own schema>}``."""
    if schema is None or part == WHOLE:
        return None
    props = schema.get("properties") if isinstance(schema, dict) else None
    inner = props.get(part, {}) if isinstance(props, dict) else {}
    return {"type": "object", "required": ["fix"], "properties": {"fix": inner}}


@register
class Review(Policy):
    name = "review"
    description = "drafts in parallel, a supervisor reviews, only the weak parts are redone, re-review"
    Options = ReviewOptions

    def __init__(self, plan) -> None:
        super().__init__(plan)
        tier_cycles, tier_target = TIER_DEFAULTS.get(plan.ask.tier or "", (DEFAULT_CYCLES, DEFAULT_TARGET))
        o = self.options
        self.cycles = o.cycles if o.cycles is not None else tier_cycles
        self.target = o.quality_target if o.quality_target is not None else tier_target
        self.drafts: dict[str, m.Completion] = {}  # provider -> its draft (parts replaced as regenerated)
        self.failed: dict[str, str] = {}  # provider -> failure kind of its draft
        self.phase = DRAFT
        self.cycle = 0
        self.verdicts: list[m.Verdict] = []
        self.regenerated: list[dict[str, str]] = []
        self.first_issues: set[tuple[str, str]] | None = None

    # --- phases ------------------------------------------------------------------------------
    def begin(self, now: float) -> list[Action]:
        until = now + (self.plan.deadline - now) * self.options.draft_share
        own = self.options.parts
        return [Call(f"draft.{p}", p, deadline=until, purpose=DRAFT, schema=restrict(self.plan.ask.schema, own.get(p)))
                for p in self.plan.candidates]

    def decide(self, event: Event, now: float) -> list[Action]:
        if type(event) is Deadline:
            return self.degrade("the deadline came before the review finished")
        if type(event) is not Reply:
            return []
        key = event.key
        if key.startswith("draft."):
            first = not self.drafts
            self._draft(key.removeprefix("draft."), event.result)
            if first and self.drafts:  # the first usable draft, shown at once to a streaming client
                draft = next(iter(self.drafts.values()))
                shown = [Progress("draft", draft.text)]
                return shown if self.open else shown + self._after_drafts(now)
        elif key.startswith("regen."):
            self._regenerated(key, event.result)
        elif key.startswith("review."):
            return self._verdict(event.result, now)
        if self.open:
            return []
        return self._after_drafts(now)

    def _after_drafts(self, now: float) -> list[Action]:
        if not self.drafts:
            return [Done(m.Failure(kind=m.ALL_FAILED, message=f"no draft to review ({self.summary()})"))]
        if self.phase == REGEN:
            self.cycle += 1
        return self._review(now)

    def _review(self, now: float) -> list[Action]:
        if (self.plan.deadline - now) * 1000.0 < self.options.min_review_ms:
            return self.degrade("too little time left for the supervisor")
        self.phase = REVIEW
        ask = self.plan.ask
        cands = [m.Candidate(provider=p, text=self.drafts[p].text, data=self.drafts[p].data)
                 for p in self.plan.candidates if p in self.drafts]  # the plan's order: ties break the same way
        request = m.Review(ask_id=ask.id, messages=ask.messages, candidates=cands, schema=ask.schema, cycle=self.cycle)
        return [Call(f"review.{self.cycle}", service=SUPERVISOR_REVIEW, request=request, purpose=REVIEW,
                     name="supervisor")]

    def _verdict(self, result: Any, now: float) -> list[Action]:
        if not isinstance(result, m.Verdict):
            what = result.kind if isinstance(result, m.Failure) else type(result).__name__
            return self.degrade(f"the supervisor failed: {what}")
        self.verdicts.append(result)
        shown: list[Action] = []
        if self.first_issues is None:
            self.first_issues = {(i.kind, i.where) for i in result.issues}
            shown.append(Progress("enhanced", result.text))  # the first merge
        wanted = [r for r in result.regenerate if r.provider in self.drafts]
        if result.score >= self.target or not wanted or self.cycle >= self.cycles:
            return shown + self.final(self.finish(result))
        if (self.plan.deadline - now) * 1000.0 < 2 * self.options.min_review_ms:
            return shown + self.final(self.finish(result, degraded="too little time left to regenerate"))
        self.phase = REGEN
        ask = self.plan.ask
        calls = []
        for r in {(r.part, r.provider): r for r in wanted}.values():
            fix = (f"A reviewer checked your earlier answer. Redo only the part {r.part!r}"
                   f"{'' if r.part == WHOLE else ' (answer it under the key fix)'}: {r.fix}")
            messages = [m.Message(role="system", content=fix), *ask.messages]
            schema = part_schema(ask.schema, r.part)
            calls.append(Call(f"regen.{self.cycle}.{r.provider}.{r.part}", r.provider, messages=messages,
                              schema=schema, no_schema=schema is None and ask.schema is None, purpose=REGEN))
            self.regenerated.append({"cycle": str(self.cycle + 1), "part": r.part, "provider": r.provider})
        return shown + calls

    # --- replies -----------------------------------------------------------------------------
    def _draft(self, provider: str, result: Any) -> None:
        if isinstance(result, m.Completion) and (result.data is not None or result.text.strip()):
            self.drafts[provider] = result
        else:
            self.failed[provider] = result.kind if isinstance(result, m.Failure) else "empty"

    def _regenerated(self, key: str, result: Any) -> None:
        _, _, provider, part = key.split(".", 3)
        old = self.drafts.get(provider)
        if old is None or not isinstance(result, m.Completion):
            return  # the draft keeps its part; the next review says what is still wrong
        if part == WHOLE or not isinstance(old.data, dict):
            self.drafts[provider] = msgspec.structs.replace(old, text=result.text, data=result.data)
        elif isinstance(result.data, dict) and "fix" in result.data:
            data = {**old.data, part: result.data["fix"]}
            self.drafts[provider] = msgspec.structs.replace(old, data=data)

    # --- endings -----------------------------------------------------------------------------
    def quality(self, verdict: m.Verdict) -> dict[str, Any]:
        left = {(i.kind, i.where) for i in verdict.issues}
        fixed = sorted(f"{k} at {w}" for k, w in (self.first_issues or set()) - left)
        first = self.verdicts[0]
        return {"score": verdict.score, "rubric": verdict.rubric, "cycles": self.cycle, "target": self.target,
                "issues_fixed": fixed, "issues": [msgspec.to_builtins(i) for i in verdict.issues],
                "regenerated": self.regenerated, "supervisor": verdict.supervisor,
                "first_pass": first.score >= self.target}

    def _meta(self) -> dict[str, Any]:
        parts: dict[str, list[str]] = {}
        for p in self.plan.candidates:
            data = self.drafts[p].data if p in self.drafts else None
            for key in data if isinstance(data, dict) else ():
                parts.setdefault(key, []).append(p)
        return {"review": {"drafts": sorted(self.drafts), "failed": dict(sorted(self.failed.items())),
                           "parts": parts}}

    def finish(self, verdict: m.Verdict, degraded: str = "") -> Done:
        ask = self.plan.ask
        base = next(iter(self.drafts.values()))
        result = m.Completion(id=base.id, ask_id=ask.id, provider="supervisor", model=verdict.supervisor or "review",
                              text=verdict.text, data=verdict.data)
        meta = {**self._meta(), "quality": self.quality(verdict)}
        reason = degraded or (f"the supervisor judged by rules alone: {verdict.degraded}" if verdict.degraded else "")
        if reason:
            meta["degraded"] = {"reason": reason}
        return Done(result, providers=sorted(self.drafts), metadata=meta, confidence=verdict.score)

    @staticmethod
    def final(done: Done) -> list[Action]:
        """The reviewed answer as the ``final`` stage, then the end."""
        if isinstance(done.result, m.Completion):
            return [Progress("final", done.result.text), done]
        return [done]

    def degrade(self, reason: str) -> list[Action]:
        if self.verdicts:
            return self.final(self.finish(self.verdicts[-1], degraded=reason))
        done = best_of(list(self.drafts.values()), self.plan.ask.schema, why=f"review degraded: {reason}",
                       reliability=reliability_of(self.plan))
        if done is None:
            return [Done(m.Failure(kind=m.ALL_FAILED, message=f"{reason}; no usable draft ({self.summary()})"))]
        done.metadata.update(self._meta())
        done.metadata["degraded"] = {"reason": reason, "to": "best_draft"}
        done.metadata["quality"] = {"score": None, "cycles": self.cycle, "target": self.target, "issues_fixed": [],
                                    "first_pass": False}
        return self.final(done)
