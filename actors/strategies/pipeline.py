"""Pipeline (two stages): a cheap model computes a validated structured state, a strong one answers with it.

Stage 1 calls ``stage1`` (default: the first candidate) with ``state_schema``; its output must
validate against that schema — strict value checks included (``minimum``/``maximum`` make a number
outside [0, 1] wrong). Bad output gets one retry whose prompt names what was wrong; after that (or
when stage 1 fails or runs out of its share of the budget) ``fallback = "module:function"`` makes
the state from the ask with deterministic rules. A stage-1 failure never fails the ask: with no
fallback, or one that raises, stage 2 answers without a state.

Stage 2 calls the other candidates in order (failover on failure) with the ask's last user message
replaced by ``template`` filled with ``{state}`` (JSON), ``{source}`` and ``{question}``.
``Answer.metadata.stage1``: the state, its source (``llm`` | ``fallback`` | ``cache`` | ``none``),
the attempts, the problems seen and the latency. A good stage-1 state is kept (router-local,
``Live.stage1``) for ``cache_ttl_s`` and reused for the same question; ``Ask.cache = "skip"``
(or ``"refresh"``) opts out.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any

import msgspec

from bus import messages as m
from actors.pure.validation import problems
from actors.strategies.base import Action, Call, Deadline, Done, Event, Policy, Reply, register

TEMPLATE = ("Facts about this request, computed in advance ({source}; trust them unless they contradict "
            "the question):\n{state}\n\nRequest: {question}")
STAGE1_PROMPT = ("Extract the state of this request as JSON that fits the schema exactly. Output only the "
                 "JSON.\n\nRequest: {question}")
CLARIFY = ("Your previous answer was rejected: {problems}. Return JSON that fits the schema exactly — "
           "every required field, every number within its bounds.")


class PipelineOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state_schema: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})  # the state's JSON Schema
    stage1: str = ""  # the stage-1 provider; empty: the first candidate
    fallback: str = ""  # "module:function(ask) -> dict": the rule-based state
    template: str = TEMPLATE  # the stage-2 prompt: {state}, {source}, {question}
    stage1_share: float = 0.3  # share of the remaining budget each stage-1 attempt may use
    retries: int = 1  # clarified retries of stage 1 after bad output
    cache_ttl_s: float = 3600.0  # a good stage-1 state is reused this long (0: never)

    def __post_init__(self) -> None:
        if not 0.0 < self.stage1_share < 1.0:
            raise ValueError("`stage1_share` must be in (0, 1)")
        if self.fallback and ":" not in self.fallback:
            raise ValueError("`fallback` must be 'module:function'")
        if self.retries < 0:
            raise ValueError("`retries` must be 0 or more")


def question_of(ask: m.Ask) -> str:
    users = [msg for msg in ask.messages if msg.role == "user"]
    return users[-1].text() if users else ""


def state_key(stage1: str, schema: dict, question: str) -> str:
    raw = json.dumps([stage1, schema, question], sort_keys=True).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def rule_state(spec: str, ask: m.Ask) -> tuple[Any, str | None]:
    """(the fallback's state, None) or (None, why it gave none)."""
    if not spec:
        return None, "no fallback configured"
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)(ask), None
    except Exception as exc:
        return None, f"fallback {spec} failed: {type(exc).__name__}: {exc}"


@register
class Pipeline(Policy):
    name = "pipeline"
    description = "stage 1: a cheap model's validated state (rules when it fails); stage 2 answers with it"
    Options = PipelineOptions

    def __init__(self, plan) -> None:
        super().__init__(plan)
        opts = self.options
        cands = plan.candidates
        self.stage1 = opts.stage1 or cands[0]
        self.stage2 = [p for p in cands if p != self.stage1] or list(cands)
        self.question = question_of(plan.ask)
        self.attempts = 0
        self.seen: list[str] = []  # what was wrong with each attempt
        self.started = 0.0
        self.meta: dict[str, Any] = {}
        self.next2 = 0
        self.key = state_key(self.stage1, opts.state_schema, self.question)

    # --- stage 1 -------------------------------------------------------------------------------
    def begin(self, now: float) -> list[Action]:
        self.started = now
        live, ask = self.plan.live, self.plan.ask
        if live is not None and ask.cache == "use" and self.options.cache_ttl_s > 0:
            hit = live.stage1.get(self.key)
            if hit is not None and hit[1] > now:
                return self._stage2(hit[0], "cache", now)
        return [self._stage1_call(now, None)]

    def _stage1_call(self, now: float, wrong: str | None) -> Call:
        self.attempts += 1
        messages = [m.Message(role="user", content=STAGE1_PROMPT.format(question=self.question))]
        if wrong is not None:
            messages.append(m.Message(role="user", content=CLARIFY.format(problems=wrong)))
        left = self.plan.deadline - now
        return Call(f"s1-{self.attempts}", self.stage1, deadline=now + left * self.options.stage1_share,
                    messages=messages, schema=self.options.state_schema, purpose="stage1")

    def decide(self, event: Event, now: float) -> list[Action]:
        if type(event) is Deadline:
            return [Done(self.failure("budget spent", kind=m.TIMEOUT), metadata=self.meta)]
        if type(event) is not Reply:
            return []
        if event.key.startswith("s1-"):
            return self._stage1_reply(event, now)
        if event.ok:
            return [Done(event.result, metadata=self.meta)]
        if self.next2 < len(self.stage2) and now < self.plan.deadline:
            return [self._stage2_call()]
        return [Done(event.result, metadata=self.meta)]

    def _stage1_reply(self, event: Reply, now: float) -> list[Action]:
        result = event.result
        if isinstance(result, m.Completion):
            wrong = problems(result.data, self.options.state_schema)
            if not wrong:
                live = self.plan.live
                if live is not None and self.options.cache_ttl_s > 0 and self.plan.ask.cache != "skip":
                    live.keep_stage1(self.key, result.data, now + self.options.cache_ttl_s)
                return self._stage2(result.data, "llm", now)
            why = "; ".join(wrong)
        else:
            why = f"the call failed: {result.kind}"
        self.seen.append(why)
        if self.attempts <= self.options.retries and isinstance(result, m.Completion):
            return [self._stage1_call(now, why)]
        state, problem = rule_state(self.options.fallback, self.plan.ask)
        if problem is not None:
            self.seen.append(problem)
            return self._stage2(None, "none", now)
        return self._stage2(state, "fallback", now)

    # --- stage 2 -------------------------------------------------------------------------------
    def _stage2(self, state: Any, source: str, now: float) -> list[Action]:
        self.meta = {"stage1": {"state": state, "source": source, "attempts": self.attempts,
                                "latency_ms": round((now - self.started) * 1000.0, 3),
                                **({"problems": self.seen} if self.seen else {})}}
        if state is None:
            self.prompt = self.question
        else:
            self.prompt = self.options.template.format(state=json.dumps(state, sort_keys=True), source=source,
                                                       question=self.question)
        return [self._stage2_call()]

    def _stage2_call(self) -> Call:
        provider = self.stage2[self.next2]
        self.next2 += 1
        ask = self.plan.ask
        messages = [*[msg for msg in ask.messages if msg.role != "user"][:1],
                    m.Message(role="user", content=self.prompt)]
        return Call(f"s2-{self.next2}", provider, messages=messages)
