"""The strategy kernel: policies fed events as tables (no NATS), and the runner end to end on real NATS
with mock providers — parallel calls, cancelling one call (never the ask), timers, the deadline,
money with calls in flight, options, the live strategy choice, and bad asks."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from actors.strategies.base import (
    REGISTRY, Call, Cancel, Deadline, Done, Plan, Policy, Reply, Wake, WakeAt, describe_options, options_for,
    register, strategies,
)
from actors.strategies import runner
from actors.strategies.failover import Failover, FailoverOptions
from actors.strategies.single import Single
from bus import messages as m
from bus.deadline import ASK_ID_HEADER, deadline_in
from bus.errors import BadRequest, BudgetExceeded
from bus.subjects import CACHE_GET, CONTROL_STRATEGY
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

ASK = m.Ask(id="q", messages=[m.Message(role="user", content="hi")])


def ok(provider: str) -> m.Completion:
    return m.Completion(id="c-" + provider, ask_id="q", provider=provider, model=provider + "-1", text="hi " + provider)


def fail(provider: str, kind: str, **kw) -> m.Failure:
    return m.Failure(kind=kind, message=f"{provider} said {kind}", provider=provider, **kw)


def plan(candidates, options=None, deadline=10.0) -> Plan:
    return Plan(ASK, list(candidates), options, deadline)


# --- the registry and options ------------------------------------------------------------------------


def test_registry_lists_single_and_failover_with_options():
    known = strategies()
    assert {"single", "failover"} <= set(known)
    assert all(cls.description for cls in known.values())
    assert ("reserve", "float", 0.3) in describe_options(known["failover"])
    assert describe_options(known["single"]) == []


def test_options_layers_and_errors_name_the_option():
    opts = options_for(Failover, {"reserve": 0.5}, {"retry_same_provider": False})
    assert opts == FailoverOptions(reserve=0.5, retry_same_provider=False)
    with pytest.raises(ValueError, match="resrve"):
        options_for(Failover, {"resrve": 0.5})
    with pytest.raises(ValueError, match="reserve"):
        options_for(Failover, {"reserve": "lots"})


# --- policies as tables ------------------------------------------------------------------------------


def test_single_calls_the_first_and_its_reply_is_final():
    p = Single(plan(["a", "b"]))
    assert p.start(0.0) == [Call("0", "a")]
    failure = fail("a", m.OVERLOADED)
    assert p.step(Reply("0", failure, 1.0, "a"), 0.1) == [Done(failure)]


def test_failover_waits_out_retry_after_with_a_timer_then_calls_again():
    p = Failover(plan(["a", "b"], FailoverOptions()))
    [first] = p.start(0.0)
    assert first.provider == "a" and first.deadline == pytest.approx(7.0)
    actions = p.step(Reply("0", fail("a", m.RATE_LIMITED, retry_after_s=0.5), 1.0, "a"), 1.0)
    assert actions == [WakeAt(1.5)]
    [again] = p.step(Wake(1.5), 1.5)
    assert again.provider == "a" and again.key == "1"
    assert p.step(Reply("1", ok("a"), 1.0, "a"), 2.0) == [Done(ok("a"))]


def test_failover_answers_the_deadline_with_a_timeout_naming_what_it_tried():
    p = Failover(plan(["a", "b"], FailoverOptions()))
    p.start(0.0)
    p.step(Reply("0", fail("a", m.TIMEOUT), 1.0, "a"), 7.0)
    [done] = p.step(Deadline(), 10.0)
    assert done.result.kind == m.TIMEOUT and "a: timeout" in done.result.message


# --- the runner, end to end ----------------------------------------------------------------------------


class RaceOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    delay_s: float = 0.0  # 0: every candidate at once; else the next one after this long (a hedge)
    cancel_on_first: bool = True


class Race(Policy):
    """Test policy: call candidates (all at once, or one more per delay); the first answer wins."""

    name = "test_race"
    description = "first answer wins (test policy)"
    Options = RaceOptions

    def begin(self, now):
        if self.options.delay_s:
            return [Call("0", self.plan.candidates[0]), WakeAt(now + self.options.delay_s)]
        return [Call(str(i), p) for i, p in enumerate(self.plan.candidates)]

    def decide(self, event, now):
        if isinstance(event, Reply) and event.ok:
            if self.options.cancel_on_first:
                opened = {r.key for r in self.replies}
                return [Cancel(str(i)) for i in range(len(self.plan.candidates)) if str(i) not in opened] + \
                    [Done(event.result, providers=[event.target])]
            return [Done(event.result)]
        if isinstance(event, Wake) and len(self.replies) + self.open < len(self.plan.candidates):
            n = len(self.replies) + self.open
            return [Call(str(n), self.plan.candidates[n]), WakeAt(now + self.options.delay_s)]
        if isinstance(event, Deadline):
            return []  # ignores the deadline: the runner must still end the ask
        if self.open == 0 and len(self.replies) == len(self.plan.candidates):
            return [Done(self.failure("every racer failed"))]
        return []


@pytest.fixture
def race():
    register(Race)
    yield
    REGISTRY.pop(Race.name, None)


RACE = """
[router]
providers = ["slow", "fast", "stall"]
[providers.slow]
latency = { dist = "fixed", ms = 400 }
[providers.fast]
latency = { dist = "fixed", ms = 5 }
[providers.stall]
failures = { stall = 1.0 }
"""


async def test_parallel_calls_first_wins_and_the_loser_is_cancelled_not_the_ask(stack, race):
    async with stack(RACE) as s:
        slow, stall = s.actor("provider.slow"), s.actor("provider.stall")
        answer = await s.client.ask("go", strategy="test_race", budget_ms=3000)
        assert answer.text.endswith("go") and answer.providers == ["fast"] and answer.strategy == "test_race"
        outcomes = {step.provider: step.outcome for step in answer.route}
        assert outcomes == {"slow": "cancelled", "fast": "ok", "stall": "cancelled"}
        assert all(step.call_id for step in answer.route)
        # each loser got the request, then a Cancel for its call only: its work stopped at once
        assert slow.statistics().endpoints["complete"].num_requests == 1
        assert stall.statistics().endpoints["complete"].num_requests == 1
        await wait_until(lambda: slow.in_flight() == 0 and stall.in_flight() == 0, within_s=1.0, what="losers stopped")
        assert slow.statistics().endpoints["complete"].last_error.startswith(m.CANCELLED)


async def test_a_hedge_after_a_delay_and_a_policy_that_ignores_the_deadline(stack, race):
    async with stack(RACE) as s:
        answer = await s.client.ask("go", strategy="test_race", providers=["slow", "fast"],
                                    strategy_options={"delay_s": 0.05}, budget_ms=3000)
        assert [(st.provider, st.outcome) for st in answer.route] == [("slow", "cancelled"), ("fast", "ok")]
        assert answer.route[0].ms >= 40  # the hedge went out after the delay, not at once


class Sleeper(Policy):
    """Test policy: one call, a far timer, and no answer to the Deadline."""

    name = "test_sleeper"

    def begin(self, now):
        return [Call("0", "p"), WakeAt(now + 60.0)]

    def decide(self, event, now):
        return []


class NeverAnswers:
    def __init__(self):
        self.cancelled: list[str] = []

    @staticmethod
    def new_id():
        return "call-1"

    async def call(self, call, call_id, deadline):
        await anyio.sleep(60)

    async def cancel(self, record, reason):
        self.cancelled.append(record.call_id)


async def test_the_runner_ends_a_policy_that_ignores_the_deadline_and_cancels_what_is_open():
    calls = NeverAnswers()
    clock = anyio.current_time
    with anyio.fail_after(2):
        outcome = await runner.run(Sleeper(plan(["p"])), calls, deadline=clock() + 0.05, clock=clock)
    assert outcome.done.result.kind == m.TIMEOUT
    assert [(r.call.key, r.outcome) for r in outcome.records] == [("0", "cancelled")]
    assert calls.cancelled == ["call-1"]


MONEY = """
[router]
providers = ["a", "b", "c"]
[providers.a]
model = "gpt-4o-mini"
latency = { dist = "fixed", ms = 50 }
[providers.b]
model = "gpt-4o-mini"
latency = { dist = "fixed", ms = 50 }
[providers.c]
model = "gpt-4o-mini"
latency = { dist = "fixed", ms = 50 }
"""


async def test_max_cost_counts_the_worst_case_of_calls_in_flight(stack, race, tmp_path):
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[mock."gpt-4o-mini"]\ninput = 1000000.0\noutput = 1000000.0\n')
    toml = MONEY + f'[cost]\npricing = "{pricing}"\n'
    async with stack(toml) as s:
        router = s.actor("router")
        ask = m.Ask(id="x", messages=[m.Message(role="user", content="go")], params=m.Params(max_tokens=10))
        worst = router.budgets.worst_case("a", ask)
        assert worst > 0
        # room for two worst cases, not three: the third parallel call is refused before it goes out
        answer = await s.client.ask("go", strategy="test_race", params=m.Params(max_tokens=10),
                                    max_cost_usd=2.5 * worst, strategy_options={"cancel_on_first": False},
                                    budget_ms=3000)
        outcomes = sorted(step.outcome for step in answer.route)
        assert outcomes == ["budget_exceeded", "cancelled", "ok"] or outcomes == ["budget_exceeded", "ok", "ok"]
        assert s.actor("provider.c").statistics().endpoints["complete"].num_requests == 0


async def test_strategy_options_per_ask_and_bad_ones(stack):
    async with stack(RACE) as s:
        with pytest.raises(BadRequest, match="resrve"):
            await s.client.ask("go", strategy="failover", strategy_options={"resrve": 0.1}, budget_ms=2000)
        # reserve 0: the first provider may use the whole budget (it stalls, so nothing is left for fast)
        with pytest.raises(Exception) as info:
            await s.client.ask("go", strategy="failover", providers=["stall", "fast"],
                               strategy_options={"reserve": 0.0}, budget_ms=300)
        assert info.value.failure.kind == m.TIMEOUT
        answer = await s.client.ask("go", strategy="failover", providers=["stall", "fast"], budget_ms=600)
        assert [st.outcome for st in answer.route] == ["timeout", "ok"]


TWO_ROUTERS = """
[router]
strategy = "failover"
providers = ["a"]
[providers.a]
"""


async def test_set_strategy_changes_every_router_live(stack):
    async with stack(TWO_ROUTERS) as s:
        other = await s.add("router")
        routers = [s.actor("router"), other]

        async def control(request):
            return await s.client.rpc.service(CONTROL_STRATEGY, request, deadline=deadline_in(2000))

        report = await control(m.StrategyQuery())
        assert report.default == "failover" and report.configured == "failover" and "single" in report.available
        report = await control(m.StrategySet(strategy="single"))
        assert report.default == "single"
        await wait_until(lambda: all(r.choice.for_tier(None) == "single" for r in routers), what="both routers")
        await control(m.StrategySet(strategy="failover", tier="premium"))
        await wait_until(lambda: all(r.choice.for_tier("premium") == "failover" for r in routers), what="tier")
        for _ in range(4):  # whichever router takes the ask
            assert (await s.client.ask("x", budget_ms=2000)).strategy == "single"
            assert (await s.client.ask("x", tier="premium", budget_ms=2000)).strategy == "failover"
        bad = await control(m.StrategySet(strategy="nope"))
        assert bad.kind == m.BAD_REQUEST and "nope" in bad.message
        await control(m.StrategySet(strategy=None))  # back to the config's
        await wait_until(lambda: all(r.choice.for_tier(None) == "failover" for r in routers), what="cleared")
        # a router started now reads the persisted choice
        third = await s.add("router")
        assert third.choice.for_tier("premium") == "failover"


async def test_bad_asks_are_bad_requests_naming_the_problem(stack):
    async with stack(TWO_ROUTERS) as s:
        router = s.actor("router")
        for ask, needle in [
            (m.Ask(id="e1", messages=[]), "no messages"),
            (m.Ask(id="e2", messages=[m.Message(role="wizard", content="x")]), "wizard"),
            (m.Ask(id="e3", messages=[m.Message(role="user", content="x")], budget_ms=0), "budget_ms"),
        ]:
            reply = await s.client.send(ask, deadline=deadline_in(2000))
            assert isinstance(reply, m.Failure) and reply.kind == m.BAD_REQUEST and not reply.retryable, reply
            assert needle in reply.message
        with pytest.raises(BadRequest, match="budget_ms"):
            await s.client.ask("x", budget_ms=-5)
        big = "x" * (s.client.nc.max_payload + 10)
        with pytest.raises(BadRequest, match="max_payload"):
            await s.client.ask(big, budget_ms=2000)
        # an ask that fits but whose provider call would not: bad_request too, and no retry
        near = "y" * (s.client.nc.max_payload - 400)
        with pytest.raises(BadRequest, match="max_payload"):
            await s.client.ask(near, budget_ms=2000, labels={"pad": "z" * 300})
        assert router.statistics().endpoints["ask"].num_errors >= 1


async def test_every_request_of_an_ask_carries_its_ask_id_and_a_slow_cache_cancels_nothing(stack):
    toml = TWO_ROUTERS + "[cache]\nlookup_ms = 30\n"
    async with stack(toml, names=["router", "provider.a"]) as s:
        seen: list[str | None] = []

        async def sink(msg):  # a cache that never answers
            seen.append((msg.headers or {}).get(ASK_ID_HEADER))

        await s.client.nc.subscribe(CACHE_GET.subject(s.client.subjects), queue=CACHE_GET.queue, cb=sink)
        await s.client.nc.flush()
        answer = await s.client.ask("x", ask_id="ask-42", budget_ms=2000)
        assert answer.text and seen == ["ask-42"]  # the lookup timed out; the ask went on and answered


def test_synthesis_stands_the_synthesizer_in_for_a_failed_candidate_once():
    from actors.strategies.synthesis import Synthesis, SynthesisOptions

    p = Synthesis(plan(["s", "a", "b"], SynthesisOptions(patience_ms=0)))
    assert [(c.key, c.provider) for c in p.start(0.0)] == [("0", "a"), ("1", "b")]
    assert p.step(Reply("0", ok("a"), 1.0, "a"), 0.1) == []
    spare = p.step(Reply("1", fail("b", m.OVERLOADED), 1.0, "b"), 0.2)
    assert [(c.key, c.provider, c.deadline) for c in spare] == [("spare", "s", p.scatter_deadline)]
    merge = p.step(Reply("spare", ok("s"), 1.0, "s"), 0.3)
    assert [(c.key, c.provider, c.purpose) for c in merge] == [("synthesis", "s", "synthesis")]
    (done,) = p.step(Reply("synthesis", ok("s"), 1.0, "s"), 0.4)
    assert done.metadata["synthesis"] == {"synthesizer": "s", "candidates": ["a", "s"], "spare": "s"}
    # a refusal another provider would share (bad_request) is not stood in for; nor twice
    q = Synthesis(plan(["s", "a", "b"], SynthesisOptions(patience_ms=0)))
    q.start(0.0)
    q.step(Reply("0", fail("a", m.BAD_REQUEST), 1.0, "a"), 0.1)
    (degraded,) = q.step(Reply("1", ok("b"), 1.0, "b"), 0.2)
    assert "nothing to synthesise" in degraded.metadata["degraded"]["reason"]
