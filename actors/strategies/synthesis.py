"""Synthesis ("ultra", mixture-of-agents): the scatter, then one synthesizer merges the candidates.

The candidates are asked the ask itself (every candidate but the synthesizer, when others are
left); their calls end early enough to keep ``reserve`` of the budget for the synthesizer. At
quorum + patience (or when every candidate has answered or failed) the synthesizer gets a second
call with its own messages: ``config/templates/synthesis.md`` (or the ``template`` option's
file) filled with the question and the candidates, and the ask's schema, so a structured ask gets
schema-valid output. The answer is the synthesizer's; ``providers`` lists the candidates and it.

A spare: when the synthesizer is not among the askees and a candidate fails in a way another
provider may not (overloaded, rate-limited, unavailable, internal, invalid or empty output), the
synthesizer is asked the ask too, once, as a stand-in candidate: two answers to merge beat one
(``metadata.synthesis.spare`` names it).

Degraded, to best_match over the candidates (``metadata.degraded`` says why): the synthesizer
failed, fewer than ``min_synthesis_ms`` were left, the deadline came first, or only one candidate
answered. No usable candidate at all is ``Failure(all_failed)``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from bus import messages as m
from actors.strategies.base import Action, Call, Deadline, Done, Event, Reply, register
from actors.strategies.best_match import best_of
from actors.strategies.consensus import Scatter, ScatterOptions, reliability_of, usable

TEMPLATE = Path(__file__).resolve().parents[2] / "config" / "templates" / "synthesis.md"
SYNTH = "synthesis"
SPARE = "spare"
# a candidate that failed so may be stood in for by the synthesizer (another provider may do better)
STAND_IN = frozenset({m.OVERLOADED, m.RATE_LIMITED, m.UNAVAILABLE, m.INTERNAL, m.INVALID_OUTPUT})


class SynthesisOptions(ScatterOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    synthesizer: str = ""  # the provider that merges ("" : the first candidate)
    reserve: float = 0.35  # share of the budget kept for the synthesizer
    min_synthesis_ms: float = 50.0  # less time than this left: best_match instead
    template: str = ""  # a template file ("" : config/templates/synthesis.md)
    template_body: str = ""  # the template itself (an analysis pattern's synthesis prompt); wins over ``template``

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.reserve < 1.0:
            raise ValueError("`reserve` must be in [0, 1)")


@lru_cache(maxsize=8)
def template_text(path: str) -> str:
    return Path(path or TEMPLATE).read_text(encoding="utf-8")


def render(template: str, ask: m.Ask, candidates: list[m.Completion]) -> str:
    question = "\n\n".join(f"[{msg.role}] {msg.text()}" for msg in ask.messages if msg.role in ("system", "user"))
    blocks = "\n\n".join(f"### Candidate {i} ({c.provider})\n\n{c.text.strip()}" for i, c in enumerate(candidates, 1))
    return template.replace("{question}", question).replace("{candidates}", blocks)


@register
class Synthesis(Scatter):
    name = "synthesis"
    description = "every candidate in parallel, then a synthesizer merges them (best_match if it cannot)"
    Options = SynthesisOptions

    def __init__(self, plan) -> None:
        super().__init__(plan)
        self.synthesizer = self.options.synthesizer or plan.candidates[0]
        others = [p for p in plan.candidates if p != self.synthesizer]
        self.askees = others or list(plan.candidates)
        self.scatter_deadline: float | None = None
        self.candidates: list[m.Completion] = []
        self.spare: str | None = None

    def decide(self, event: Event, now: float) -> list[Action]:
        if (type(event) is Reply and not self.closed and self.spare is None and event.key != SPARE
                and self.synthesizer not in self.askees and self.scatter_deadline is not None
                and now < self.scatter_deadline and self.stand_in_for(event.result)):
            self.spare = self.synthesizer
            return [Call(SPARE, self.synthesizer, deadline=self.scatter_deadline)]
        return super().decide(event, now)

    def stand_in_for(self, result) -> bool:
        if isinstance(result, m.Failure):
            return result.kind in STAND_IN
        return not usable(result, self.structured)

    def calls(self, now: float) -> list[Call]:
        self.scatter_deadline = now + (self.plan.deadline - now) * (1.0 - self.options.reserve)
        n = self.options.samples
        return [Call(str(i * n + s), p, deadline=self.scatter_deadline)
                for i, p in enumerate(self.askees) for s in range(n)]

    def close(self, now: float, timed_out: bool) -> list[Action]:
        good = self.good()
        if not good:
            return [self.too_few(0, timed_out)]
        self.candidates = good
        if timed_out:
            return self.degrade("the deadline came before the synthesis")
        if len(good) < max(2, self.options.quorum):
            return self.degrade(f"{len(good)} candidate(s) answered: nothing to synthesise")
        if (self.plan.deadline - now) * 1000.0 < self.options.min_synthesis_ms:
            return self.degrade("too little time left for the synthesizer")
        prompt = render(self.options.template_body or template_text(self.options.template), self.plan.ask, good)
        return [Call(SYNTH, self.synthesizer, messages=[m.Message(role="user", content=prompt)], purpose=SYNTH)]

    def after_close(self, event: Event, now: float) -> list[Action]:
        if type(event) is Reply and event.key == SYNTH:
            result = event.result
            structured = self.structured
            if isinstance(result, m.Completion) and (isinstance(result.data, dict) if structured else result.text.strip()):
                providers = list(dict.fromkeys([c.provider for c in self.candidates] + [result.provider]))
                about = {"synthesizer": result.provider, "candidates": [c.provider for c in self.candidates]}
                if self.spare:
                    about["spare"] = self.spare
                return [Done(result, providers=providers, metadata={"synthesis": about})]
            what = result.kind if isinstance(result, m.Failure) else "an unusable answer"
            return self.degrade(f"the synthesizer {self.synthesizer} failed: {what}")
        if type(event) is Deadline:
            return self.degrade("the synthesizer did not answer in time")
        return []

    def degrade(self, reason: str) -> list[Action]:
        done = best_of(self.candidates, self.plan.ask.schema, why=f"synthesis degraded: {reason}",
                       reliability=reliability_of(self.plan))
        if done is None:
            return [Done(m.Failure(kind=m.ALL_FAILED, message=f"{reason}; no candidate is valid ({self.outcomes()})"))]
        done.metadata["degraded"] = {"reason": reason, "to": "best_match"}
        return [done]
