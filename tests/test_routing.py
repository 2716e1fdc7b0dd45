"""Routing policies (issue 14): hedged, cascade, pipeline, tiers with fallback routes, experiments.

Pure parts as tables (no NATS): the quantile sketch, the hedge budget, each policy fed events. Then
each policy end to end on real NATS with mock providers."""

from __future__ import annotations

import math
import random

import pytest

from actors.pure.hedging import HedgeBudget, delay_s
from actors.pure.quantiles import Sketch
from actors.router.live import Live
from actors.strategies.base import Call, Deadline, Done, Plan, Reply, Wake, WakeAt, options_for
from actors.strategies.hedged import Hedged
from bus import messages as m
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

ASK = m.Ask(id="q", messages=[m.Message(role="user", content="hi")])


def ok(provider: str, **kw) -> m.Completion:
    return m.Completion(id="c-" + provider, ask_id="q", provider=provider, model=provider + "-1",
                        text="hi " + provider, **kw)


def fail(provider: str, kind: str = m.OVERLOADED) -> m.Failure:
    return m.Failure(kind=kind, message=f"{provider} said {kind}", provider=provider)


# --- the sketch and the hedge budget -------------------------------------------------------------


def test_sketch_quantiles_are_within_its_relative_accuracy():
    rng = random.Random(7)
    values = [rng.lognormvariate(math.log(0.1), 0.5) for _ in range(20_000)]
    sketch = Sketch(alpha=0.02, half_life=1e9)
    for v in values:
        sketch.add(v)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = ordered[int(q * len(ordered))]
        assert sketch.quantile(q) == pytest.approx(exact, rel=0.03)
    assert Sketch().quantile(0.5) is None


def test_sketch_follows_a_shift_within_its_half_life_and_counts_inf_above_everything():
    sketch = Sketch(half_life=200)
    for _ in range(5000):
        sketch.add(0.010)
    for _ in range(1000):  # the provider turns slow: 5 half-lives later the old samples weigh ~3 %
        sketch.add(0.100)
    assert sketch.quantile(0.5) == pytest.approx(0.100, rel=0.03)
    stalls = Sketch(half_life=1e9)
    for i in range(100):
        stalls.add(math.inf if i % 10 == 0 else 0.01)
    assert stalls.quantile(0.85) == pytest.approx(0.01, rel=0.03) and stalls.quantile(0.95) == math.inf


def test_hedge_budget_caps_extra_calls_at_max_extra():
    budget = HedgeBudget(tokens=0.0)
    granted = 0
    for _ in range(1000):
        budget.credit(0.05, burst=5.0)
        granted += budget.take()  # every ask wants a hedge: everything is slow
    assert granted == 50 and budget.denied == 950


def test_delay_is_the_shared_p95_raised_by_the_local_first_answer_quantile():
    assert delay_s(None, None, max_extra=0.05, adaptive=True, default_s=0.5) == 0.5
    assert delay_s(200.0, None, max_extra=0.05, adaptive=True, default_s=0.5) == 0.2
    first = Sketch(half_life=1e9)
    for i in range(1000):  # 4 % never answer, the rest spread over 0..0.99 s
        first.add(math.inf if i % 25 == 0 else (i % 100) / 100)
    # 95.5 % of first calls answered within ~0.98 s: then the ones still waiting fit the budget (4.5 %)
    assert delay_s(200.0, first, max_extra=0.05, adaptive=True, default_s=0.5) == pytest.approx(0.98, abs=0.03)
    assert delay_s(200.0, first, max_extra=0.05, adaptive=False, default_s=0.5) == 0.2


# --- hedged as a table ---------------------------------------------------------------------------


def hedged(candidates, live=None, **opts) -> Hedged:
    return Hedged(Plan(ASK, list(candidates), options_for(Hedged, opts), 10.0, live))


def test_hedged_calls_the_next_after_the_live_p95_and_the_first_answer_wins():
    live = Live()
    live.p95_ms["a"] = 120.0
    p = hedged(["a", "b"], live)
    assert p.start(0.0) == [Call("0", "a"), WakeAt(0.12)]
    [hedge] = p.step(Wake(0.12), 0.12)
    assert (hedge.key, hedge.provider, hedge.purpose) == ("1", "b", "hedge")
    [done] = p.step(Reply("1", ok("b"), 30.0, "b"), 0.15)
    assert done.result == ok("b") and done.metadata["hedge"] == {"delay_ms": 120.0, "hedges": 1, "winner": "hedge"}
    assert live.first_answer["a"].quantile(0.5) == math.inf  # the first call had not answered: counted as a stall


def test_hedged_without_a_token_waits_for_the_first_and_a_failure_is_replaced_at_once():
    live = Live()
    live.hedge.tokens = 0.0
    p = hedged(["a", "b"], live, delay_s=0.1)
    p.start(0.0)
    assert p.step(Wake(0.1), 0.1) == []  # 0.05 tokens: no hedge
    [done] = p.step(Reply("0", ok("a"), 300.0, "a"), 0.3)
    assert done.metadata["hedge"] == {"delay_ms": 100.0, "hedges": 0, "refused": 1, "winner": "first"}
    p = hedged(["a", "b"], Live(), delay_s=0.1)
    p.start(0.0)
    [again] = p.step(Reply("0", fail("a"), 1.0, "a"), 0.001)
    assert (again.provider, again.purpose) == ("b", "answer")
    [done] = p.step(Reply("1", fail("b"), 1.0, "b"), 0.002)
    assert done.result.kind == m.ALL_FAILED and "a: overloaded, b: overloaded" in done.result.message


def test_hedged_with_one_candidate_hedges_to_it_again_and_answers_the_deadline():
    p = hedged(["a"], Live(), delay_s=0.1)
    p.start(0.0)
    [hedge] = p.step(Wake(0.1), 0.1)
    assert hedge.provider == "a" and hedge.key == "1"
    [done] = p.step(Deadline(), 10.0)
    assert done.result.kind == m.TIMEOUT


# --- end to end -----------------------------------------------------------------------------------

HEDGE = """
[router]
providers = ["slow", "fast"]
[providers.slow]
latency = { dist = "fixed", ms = 400 }
[providers.fast]
latency = { dist = "fixed", ms = 5 }
[providers.steady]
latency = { dist = "fixed", ms = 20 }
"""


async def test_hedged_end_to_end_the_loser_is_cancelled_and_the_delay_comes_from_health(stack):
    async with stack(HEDGE) as s:
        answer = await s.client.ask("go", strategy="hedged", strategy_options={"delay_s": 0.05}, budget_ms=3000)
        assert [(st.provider, st.outcome, st.purpose) for st in answer.route] == [
            ("slow", "cancelled", None), ("fast", "ok", "hedge")]
        assert answer.route[0].ms >= 40 and answer.metadata["hedge"]["winner"] == "hedge"
        # the live delay: the health actor's p95 of "steady", read by the router from KV
        for _ in range(5):
            await s.client.ask("warm", strategy="single", providers=["steady"], cache="skip", budget_ms=2000)
        health, router = s.actor("health"), s.actor("router")
        await wait_until(lambda: health.metrics["steady"].calls == 5, what="outcomes consumed")
        await health.flush_metrics()
        await wait_until(lambda: "steady" in router.live.p95_ms, what="p95 mirrored")
        answer = await s.client.ask("go", strategy="hedged", providers=["steady", "fast"], budget_ms=3000)
        assert answer.metadata["hedge"]["delay_ms"] == pytest.approx(router.live.p95_ms["steady"], abs=0.01)
        assert 15 <= answer.metadata["hedge"]["delay_ms"] <= 40
        assert answer.providers == ["steady"]


# --- cascade ----------------------------------------------------------------------------------------

from actors.strategies.cascade import Cascade  # noqa: E402

SCORE = {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
         "required": ["score"]}


def cascade(candidates, ask=ASK, live=None, **opts) -> Cascade:
    return Cascade(Plan(ask, list(candidates), options_for(Cascade, opts), 10.0, live))


def test_cascade_escalates_on_low_confidence_invalid_output_and_failure_and_says_why():
    ask = m.Ask(id="q", messages=ASK.messages, schema=SCORE)
    p = cascade(["cheap", "mid", "strong", "last"], ask, min_confidence=0.7)
    [first] = p.start(0.0)
    assert first.provider == "cheap" and first.deadline == pytest.approx(7.0)
    [second] = p.step(Reply("0", ok("cheap", data={"score": 0.5}, confidence=0.4), 1.0, "cheap"), 0.1)
    assert second.provider == "mid"
    [third] = p.step(Reply("1", ok("mid", data={"score": 1.5}, confidence=0.9), 1.0, "mid"), 0.2)
    assert third.provider == "strong"
    [fourth] = p.step(Reply("2", fail("strong"), 1.0, "strong"), 0.3)
    assert fourth.provider == "last" and fourth.deadline is None
    good = ok("last", data={"score": 0.9}, confidence=0.95)
    [done] = p.step(Reply("3", good, 1.0, "last"), 0.4)
    assert done.result == good
    rungs = done.metadata["cascade"]["rungs"]
    assert [(r["provider"], r["outcome"]) for r in rungs] == [
        ("cheap", "escalated"), ("mid", "escalated"), ("strong", "escalated"), ("last", "accepted")]
    assert rungs[0]["why"] == "confidence 0.40 < 0.70"
    assert rungs[1]["why"].startswith("invalid: $.score: 1.5 is greater than the maximum of 1")
    assert rungs[2]["why"] == "failed: overloaded"


def test_cascade_retries_a_rung_orders_by_price_and_returns_the_best_when_exhausted():
    live = Live()
    live.prices = {"strong": 10.0, "cheap": 0.5}
    p = cascade(["strong", "cheap"], live=live, cheapest_first=True, retries=1)
    [first] = p.start(0.0)
    assert first.provider == "cheap"
    [again] = p.step(Reply("0", fail("cheap"), 1.0, "cheap"), 0.1)
    assert again.provider == "cheap"  # retried once
    [up] = p.step(Reply("1", ok("cheap", confidence=0.6), 1.0, "cheap"), 0.2)
    assert up.provider == "strong"
    [done] = p.step(Reply("2", ok("strong", confidence=0.5), 1.0, "strong"), 0.3)
    assert done.result.provider == "cheap" and done.metadata["cascade"]["exhausted"] is True


CASCADE = """
[router]
providers = ["cheap", "strong"]
[providers.cheap]
confidence = 0.4
[providers.strong]
confidence = 0.95
"""


async def test_cascade_and_a_preset_end_to_end(stack, tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "careful.toml").write_text(
        'strategy = "cascade"\nproviders = ["cheap", "strong", "nowhere"]\ncache = "skip"\n'
        '[options]\nmin_confidence = 0.3\n')
    toml = CASCADE + f'\n[router.presets]\n' if False else CASCADE.replace(
        "[router]\n", f'[router]\npresets_dir = "{presets}"\n')
    async with stack(toml) as s:
        answer = await s.client.ask("go", strategy="cascade", cache="skip", budget_ms=3000)
        assert answer.providers == ["strong"] and [st.provider for st in answer.route] == ["cheap", "strong"]
        assert answer.metadata["cascade"]["rungs"][0]["why"] == "confidence 0.40 < 0.70"
        # the preset: cascade with min_confidence 0.3, so the cheap answer is good enough
        answer = await s.client.ask("go", labels={"preset": "careful"}, budget_ms=3000)
        assert answer.strategy == "cascade" and answer.providers == ["cheap"]
        with pytest.raises(Exception, match="unknown preset 'nope'"):
            await s.client.ask("go", labels={"preset": "nope"}, budget_ms=3000)


def test_shipped_presets_and_tiers_load():
    from actors import settings as settings_mod
    from actors.settings import SHIPPED_CONFIG

    shipped = settings_mod.load(SHIPPED_CONFIG)
    assert set(shipped.presets()) == {"fast", "cheap", "balanced", "reliable"}
    assert {"free", "pro", "premium"} <= set(shipped.tiers)
    assert [r.name for r in shipped.tiers["premium"].routes] == ["primary", "a", "b", "c", "emergency"]


# --- tiers and fallback routes -------------------------------------------------------------------

TIERS = """
[router]
strategy = "failover"
providers = ["a", "b", "c", "down"]
[providers.a]
latency = { dist = "fixed", ms = 5 }
[providers.b]
latency = { dist = "fixed", ms = 5 }
[providers.c]
latency = { dist = "fixed", ms = 5 }
[providers.down]
failures = { unavailable = 1.0 }
[tiers.free]
strategy = "single"
retries = 0
[tiers.premium]
strategy = "hedged"
fallback_routes = true
cache = "dedicated"
options = { delay_s = 0.5 }
[[tiers.premium.routes]]
name = "primary"
strategy = "failover"
providers = ["down", "a"]
options = { on = ["timeout"] }
[[tiers.premium.routes]]
name = "b-route"
strategy = "single"
providers = ["b"]
[[tiers.premium.routes]]
name = "emergency"
rules = "actors.pure.rules:emergency"
"""


async def test_tiers_pick_the_strategy_and_a_failed_route_falls_back_to_the_next(stack):
    async with stack(TIERS) as s:
        free = await s.client.ask("go", tier="free", cache="skip", budget_ms=2000)
        assert free.strategy == "single" and free.providers == ["a"]
        # primary fails at run time ("down" says unavailable, and this route fails over only on timeout)
        answer = await s.client.ask("go", tier="premium", cache="skip", budget_ms=2000)
        assert answer.metadata["route_name"] == "b-route" and answer.providers == ["b"]
        assert answer.metadata["routes_tried"] == [{"route": "primary", "failure": m.UNAVAILABLE}]
        assert [st.provider for st in answer.route] == ["down", "b"]
        router = s.actor("router")
        assert router.routing.uses[("premium", "b-route")] == 1
        # breakers: with b open, b-route is skipped without a call; with a and b open, the rules answer
        health = s.actor("health")
        # the asks' own outcomes first (b's success would close its breaker again if it came after)
        await wait_until(lambda: health.metrics["b"].successes == 1 and health.metrics["down"].calls == 1,
                         what="outcomes of the asks consumed")
        for provider in ("down", "b"):
            for _ in range(5):
                await health.apply(m.Outcome(provider=provider, ok=False, kind=m.UNAVAILABLE, at=health.clock()))
        await wait_until(lambda: {"down", "b"} <= {p for p, st in router.breakers.states.items() if st.state == "open"},
                         what="breakers seen by the router")
        answer = await s.client.ask("go", tier="premium", cache="skip", budget_ms=2000)
        assert answer.metadata["route_name"] == "emergency" and answer.metadata["degraded"] is True
        assert answer.metadata["routes_skipped"] == ["primary", "b-route"] and answer.providers == []
        assert "unavailable" in answer.text


async def test_an_ask_that_names_its_strategy_keeps_it_on_the_tiers_routes(stack):
    async with stack(TIERS) as s:
        # the route "primary" fails over only on timeout; the ask's own failover moves on at unavailable
        answer = await s.client.ask("go", tier="premium", strategy="failover", cache="skip", budget_ms=2000)
        assert answer.strategy == "failover" and answer.metadata["route_name"] == "primary"
        assert [(st.provider, st.outcome) for st in answer.route] == [("down", m.UNAVAILABLE), ("a", "ok")]
        streamed = [e async for e in s.client.stream("go", tier="premium", strategy="failover", cache="skip",
                                                      budget_ms=2000)]
        assert streamed[-1].metadata["route_name"] == "primary" and streamed[-1].providers == ["a"]


# --- pipeline -------------------------------------------------------------------------------------

from actors.strategies.pipeline import Pipeline  # noqa: E402

STATE = {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
         "required": ["score"]}
TRIP = m.Ask(id="q", messages=[m.Message(role="user", content="5 days in Lisbon for $1200, relaxed")])


def pipeline(live=None, ask=TRIP, **opts) -> Pipeline:
    opts.setdefault("state_schema", STATE)
    return Pipeline(Plan(ask, ["cheap", "strong"], options_for(Pipeline, opts), 10.0, live))


def test_pipeline_retries_bad_state_with_a_clarified_prompt_then_answers_with_the_state():
    live = Live()
    p = pipeline(live)
    [s1] = p.start(0.0)
    assert (s1.provider, s1.purpose, s1.schema) == ("cheap", "stage1", STATE) and s1.deadline == pytest.approx(3.0)
    [retry] = p.step(Reply("s1-1", ok("cheap", data={"score": 1.4}), 1.0, "cheap"), 0.1)
    assert "1.4 is greater than the maximum of 1" in retry.messages[-1].text()
    [s2] = p.step(Reply("s1-2", ok("cheap", data={"score": 0.8}), 1.0, "cheap"), 0.2)
    assert s2.provider == "strong" and '{"score": 0.8}' in s2.messages[-1].text() and "Lisbon" in s2.messages[-1].text()
    [done] = p.step(Reply("s2-1", ok("strong"), 1.0, "strong"), 0.5)
    stage1 = done.metadata["stage1"]
    assert stage1["state"] == {"score": 0.8} and stage1["source"] == "llm" and stage1["attempts"] == 2
    assert stage1["latency_ms"] == pytest.approx(200.0)
    again = pipeline(live)  # the same question: the state is reused
    [s2] = again.start(1.0)
    assert s2.provider == "strong" and again.meta["stage1"]["source"] == "cache"
    fresh = pipeline(live, ask=msgspec_replace(TRIP, cache="skip"))
    assert fresh.start(1.0)[0].purpose == "stage1"


def msgspec_replace(ask, **kw):
    import msgspec

    return msgspec.structs.replace(ask, **kw)


def test_pipeline_stage1_failure_uses_the_rules_and_never_fails_the_ask():
    p = pipeline(fallback="actors.pure.rules:trip_state", state_schema={"type": "object"})
    p.start(0.0)
    [s2] = p.step(Reply("s1-1", fail("cheap", m.TIMEOUT), 3.0, "cheap"), 3.0)
    assert '"destination": "Lisbon"' in s2.messages[-1].text() and '"days": 5' in s2.messages[-1].text()
    assert p.meta["stage1"]["source"] == "fallback" and p.meta["stage1"]["problems"] == ["the call failed: timeout"]
    p = pipeline(fallback="nowhere.at_all:fn")
    p.start(0.0)
    [s2] = p.step(Reply("s1-1", fail("cheap"), 1.0, "cheap"), 0.1)
    assert s2.messages[-1].text() == TRIP.messages[0].text() and p.meta["stage1"]["source"] == "none"


PIPELINE = """
[router]
providers = ["cheap", "strong"]
[providers.cheap]
latency = { dist = "fixed", ms = 5 }
failures = { unavailable = 1.0 }
[providers.strong]
latency = { dist = "fixed", ms = 5 }
[router.strategies.pipeline]
fallback = "actors.pure.rules:trip_state"
"""


async def test_pipeline_end_to_end_with_stage1_down(stack):
    async with stack(PIPELINE) as s:
        answer = await s.client.ask("3 days to Kyoto, packed", strategy="pipeline", cache="skip", budget_ms=3000)
        assert answer.providers == ["strong"] and answer.metadata["stage1"]["source"] == "fallback"
        assert answer.metadata["stage1"]["state"]["destination"] == "Kyoto"
        assert [(st.provider, st.purpose) for st in answer.route] == [("cheap", "stage1"), ("strong", None)]
        assert "Kyoto" in answer.text and '"pace": "packed"' in answer.text  # the echo mock shows its prompt


def test_llmbus_tiers_prints_the_matrix_with_the_switches():
    import json
    import subprocess

    from actors.settings import SHIPPED_CONFIG
    from tests.helpers import LLMBUS, cli_env

    done = subprocess.run([str(LLMBUS), "tiers", "--json", "--config", str(SHIPPED_CONFIG)], capture_output=True,
                          text=True, timeout=30, env=cli_env(LLMBUS_MULTI_LLM_PRO="0"))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert list(rows) == ["free", "pro", "premium"]
    assert rows["premium"]["fallback routes"][-1] == "emergency (rules)" and rows["premium"]["retries"] == 3
    assert rows["pro"]["strategy"].startswith("single") and rows["premium"]["cache namespace"] == "tier-premium"
