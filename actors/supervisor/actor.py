"""The supervisor actor: serves ``<root>.supervisor.review`` (Review → Verdict), in queue group
``supervisor``.

Who judges (``[supervisor] provider``): a model — ``anthropic`` by default when it is configured and
its key is set — called through its provider actor with a Verdict-shaped schema (structured
output: Anthropic's forced tool use); otherwise the deterministic mock judge of ``judge.py``, which
compares the candidates' structured parts and so finds planted contradictions the same way every
time. The validators (``validators = ["module:function"]``) run on every candidate beside either
judge. When the model fails or answers something unusable, the validators alone decide
(``judge.rules_only``; the Verdict's ``degraded`` says why): the review never fails for want of a
model. A review with no candidates is ``bad_request``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from bus import messages as m
from bus.endpoint import Context, Endpoint
from bus.errors import BadRequest
from bus.subjects import PROVIDER_COMPLETE, SUPERVISOR_REVIEW
from actors.runtime import Actor
from actors.supervisor.judge import Validator, judge, rules_only, validate

MOCK, RULES = "mock", "rules"

# what a judging model must answer (its structured output): the Verdict's fields it can fill
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text", "score", "issues", "regenerate"],
    "properties": {
        "text": {"type": "string", "description": "the merged answer (JSON text when the ask is structured)"},
        "data": {"description": "the merged structured answer, when the ask has a schema"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "rubric": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
        "issues": {"type": "array", "items": {
            "type": "object", "required": ["kind", "where", "detail"],
            "properties": {"kind": {"enum": [m.CONTRADICTION, m.UNSUPPORTED, m.MISSING, m.FORMAT]},
                           "where": {"type": "string"}, "detail": {"type": "string"},
                           "providers": {"type": "array", "items": {"type": "string"}}}}},
        "regenerate": {"type": "array", "items": {
            "type": "object", "required": ["part", "provider", "fix"],
            "properties": {"part": {"type": "string"}, "provider": {"type": "string"}, "fix": {"type": "string"}}}},
    },
}

INSTRUCTIONS = (
    "You are the supervisor of several drafts answering the same request. Merge them into the best "
    "answer, check them against each other (contradictions, unsupported claims, missing parts of the "
    "request, format), score the merged answer from 0 to 1 with a rubric, and ask for the weak parts to be "
    "redone: name the part (a top-level key of the data, or \"$\" for the whole answer), the provider "
    "that should redo it, and what to fix. Answer only with the structured verdict."
)


class _ModelVerdict(msgspec.Struct, kw_only=True):
    text: str
    data: Any = None
    score: float
    rubric: dict[str, float] = {}
    issues: list[m.ReviewIssue] = []
    regenerate: list[m.Regenerate] = []


class SupervisorActor(Actor):
    kind = "supervisor"
    description = "reviews candidate answers: merge, check, score, targeted regeneration"

    def __init__(self, *, judge_with: str, validators: list[tuple[str, Validator]], **kw) -> None:
        super().__init__(**kw)
        self.judge_with = judge_with  # a provider's name, MOCK or RULES
        self.validators = validators
        self.reviews = 0
        self.fallbacks = 0
        self.first_reviews = 0  # reviews of fresh drafts (cycle 0)
        self.first_passes = 0  # of those, the ones with no issue: the seed's "pass QA on the first try"

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint.serving(SUPERVISOR_REVIEW, self.subjects, self.review)]

    def first_pass_rate(self) -> float | None:
        return round(self.first_passes / self.first_reviews, 4) if self.first_reviews else None

    def micro_metadata(self) -> dict[str, str]:
        return {"kind": self.kind, "judge": self.judge_with, "validators": ",".join(n for n, _ in self.validators),
                "reviews": str(self.reviews), "fallbacks": str(self.fallbacks),
                "first_reviews": str(self.first_reviews), "first_passes": str(self.first_passes),  # alerts
                "first_pass_rate": "" if self.first_reviews == 0 else str(self.first_pass_rate())}

    async def review(self, req: m.Review, ctx: Context) -> m.Verdict:
        if not req.candidates:
            raise BadRequest("a review needs at least one candidate")
        self.reviews += 1
        if self.judge_with == MOCK:
            verdict = judge(req, self.validators, supervisor=MOCK)
        elif self.judge_with == RULES:
            verdict = rules_only(req, self.validators, why="")
        else:
            verdict = await self._ask_model(req, ctx)
            if isinstance(verdict, str):
                self.fallbacks += 1
                self.log.warning("supervisor_fallback", reason=verdict, ask_id=req.ask_id)
                verdict = rules_only(req, self.validators, why=verdict)
        if req.cycle == 0:
            self.first_reviews += 1
            self.first_passes += not verdict.issues
        return verdict

    async def _ask_model(self, req: m.Review, ctx: Context) -> m.Verdict | str:
        """The model's verdict, with the validators' findings added; a string says why there is none."""
        question = "\n\n".join(f"[{msg.role}] {msg.text()}" for msg in req.messages if msg.role in ("system", "user"))
        drafts = "\n\n".join(f"### Draft by {c.provider}\n\n{c.text if c.data is None else json.dumps(c.data)}"
                             for c in req.candidates)
        schema = f"\n\nThe answer must follow this JSON Schema:\n{json.dumps(req.schema)}" if req.schema else ""
        prompt = f"{INSTRUCTIONS}\n\n## Request\n\n{question}{schema}\n\n## Drafts\n\n{drafts}"
        call = m.Complete(id=f"{ctx.call_id or req.ask_id}.judge", ask_id=req.ask_id,
                          messages=[m.Message(role="user", content=prompt)], schema=VERDICT_SCHEMA,
                          strategy="review")
        reply = await self.rpc.service(PROVIDER_COMPLETE, call, name=self.judge_with, deadline=ctx.deadline,
                                       ask_id=req.ask_id)
        if isinstance(reply, m.Failure):
            return f"the supervisor model {self.judge_with} failed: {reply.kind}"
        try:
            got = msgspec.convert(reply.data, _ModelVerdict)
        except (msgspec.ValidationError, TypeError) as exc:
            return f"the supervisor model {self.judge_with} gave an unusable verdict: {exc}"
        found = [i for c in req.candidates for i in validate(c, self.validators)]
        rubric = dict(got.rubric)
        if self.validators:
            rubric["validators"] = round(sum(not validate(c, self.validators) for c in req.candidates)
                                         / len(req.candidates), 4)
        score = min(1.0, max(0.0, got.score)) if not found else min(got.score, rubric.get("validators", 1.0))
        return m.Verdict(text=got.text, data=got.data, score=round(score, 4), rubric=rubric,
                         issues=[*got.issues, *found], regenerate=got.regenerate, supervisor=self.judge_with)
