"""The supervisor and the review strategy, end to end on real NATS with mock workers and the mock judge."""

from __future__ import annotations

import pytest

from bus import messages as m
from actors.supervisor.judge import judge, load_validators, rules_only

pytestmark = pytest.mark.timeout(20)

SCHEMA = {
    "type": "object",
    "required": ["day1", "day2", "day3"],
    "properties": {"day1": {"type": "string"}, "day2": {"type": "string"}, "day3": {"type": "string"}},
}

# a, b and c draft the same itinerary (each string is the prompt); c plants a contradiction on day2
WORKERS = """
[router]
providers = ["a", "b", "c"]
[providers.a]
[providers.b]
[providers.c]
data = { day2 = "Louvre on Tuesday (closed on Tuesdays)" }
"""

ASK = "three days in Paris"


def requests(s, provider: str) -> int:
    return s.actor(f"provider.{provider}").statistics().endpoints["complete"].num_requests


def supervisor_of(s):
    return next(a for a in s.actors if a.kind == "supervisor")


# --- the judge (pure) ---------------------------------------------------------------------------------


def cand(provider: str, **data) -> m.Candidate:
    return m.Candidate(provider=provider, data=data)


def test_judge_flags_the_dissenter_and_merges_the_majority():
    review = m.Review(ask_id="q", messages=[], schema=SCHEMA, candidates=[
        cand("a", day1="x", day2="y", day3="z"), cand("b", day1="x", day2="y", day3="z"),
        cand("c", day1="x", day2="WRONG", day3="z")])
    v = judge(review, [])
    assert v.data == {"day1": "x", "day2": "y", "day3": "z"}
    assert [(i.kind, i.where, i.providers) for i in v.issues] == [(m.CONTRADICTION, "$.day2", ["c"])]
    assert [(r.part, r.provider) for r in v.regenerate] == [("day2", "c")]
    assert v.rubric == {"agreement": round(2 / 3, 4), "completeness": 1.0}
    assert judge(review, []) == v  # deterministic


def test_validators_find_a_budget_that_does_not_sum_and_are_the_fallback():
    validators = load_validators(["actors.supervisor.rules:budget_sums"])
    good = cand("a", items=[{"cost": 10}, {"cost": 5.5}], total=15.5)
    bad = cand("b", items=[{"cost": 10}, {"cost": 5.5}], total=20)
    review = m.Review(ask_id="q", messages=[], candidates=[bad, good])
    v = rules_only(review, validators, why="model down")
    assert v.data == good.data and v.supervisor == "rules" and v.degraded == "model down"
    assert [(i.kind, i.where, i.providers) for i in v.issues] == [(m.FORMAT, "$.total", ["b"])]
    assert [(r.part, r.provider) for r in v.regenerate] == [("total", "b")]
    assert v.score == 0.5
    with pytest.raises(ValueError, match="nope"):
        load_validators(["actors.supervisor.rules:nope"])


# --- end to end ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_planted_contradiction_is_flagged_and_only_that_part_is_regenerated(stack):
    async with stack(WORKERS) as s:
        answer = await s.client.ask(ASK, strategy="review", schema=SCHEMA, budget_ms=5000,
                                    strategy_options={"cycles": 2, "quality_target": 0.95})
        assert isinstance(answer, m.Answer), answer
        quality = answer.metadata["quality"]
        # the first review flagged c's day2; c redid day2 alone; the second review found nothing
        assert quality["regenerated"] == [{"cycle": "1", "part": "day2", "provider": "c"}]
        assert quality["issues_fixed"] == ["contradiction at $.day2"]
        assert quality["cycles"] == 1 and quality["score"] == 1.0 and quality["first_pass"] is False
        assert quality["issues"] == [] and "degraded" not in answer.metadata
        assert answer.data["day2"] == answer.data["day1"]  # the planted value is gone
        assert "closed on Tuesdays" not in answer.text
        # calls: one draft each, one regeneration by c only, two reviews
        assert (requests(s, "a"), requests(s, "b"), requests(s, "c")) == (1, 1, 2)
        assert supervisor_of(s).reviews == 2
        assert supervisor_of(s).first_pass_rate() == 0.0  # the one first review found the contradiction
        purposes = [(st.provider, st.purpose) for st in answer.route]
        assert sorted(purposes).count(("c", "regenerate")) == 1
        assert sum(1 for _, p in purposes if p == "review") == 2
        assert sorted(answer.providers) == ["a", "b", "c"]


@pytest.mark.anyio
async def test_the_cycle_cap_holds_when_a_part_stays_wrong(stack):
    # c is stubborn: its planted day2 comes back in every regeneration that names day2 by its key
    toml = WORKERS + '[supervisor]\nvalidators = ["tests.test_review:no_tuesday"]\n'
    async with stack(toml) as s:
        answer = await s.client.ask(ASK, strategy="review", schema=SCHEMA, budget_ms=5000,
                                    strategy_options={"cycles": 0})
        assert isinstance(answer, m.Answer), answer
        q = answer.metadata["quality"]
        assert q["cycles"] == 0 and q["regenerated"] == [] and q["score"] < 1.0
        assert {(i["kind"], i["where"]) for i in q["issues"]} == {("contradiction", "$.day2"), ("format", "$.day2")}
        assert (requests(s, "a"), requests(s, "b"), requests(s, "c")) == (1, 1, 1)
        assert supervisor_of(s).reviews == 1


def no_tuesday(data):
    """A test validator: nothing may be planned on a day the place is closed."""
    return [(f"$.{k}", "planned on a closing day") for k, v in data.items() if "closed" in str(v)]


@pytest.mark.anyio
async def test_with_the_supervisor_down_the_answer_is_degraded_not_a_failure(stack):
    async with stack(WORKERS + "[supervisor]\nenabled = false\n") as s:
        answer = await s.client.ask(ASK, strategy="review", schema=SCHEMA, budget_ms=3000)
        assert isinstance(answer, m.Answer), answer
        assert "the supervisor failed" in answer.metadata["degraded"]["reason"]
        assert answer.metadata["review"]["drafts"] == ["a", "b", "c"]
        assert set(answer.data) == {"day1", "day2", "day3"}
        assert (requests(s, "a"), requests(s, "b"), requests(s, "c")) == (1, 1, 1)


@pytest.mark.anyio
async def test_partial_draft_failures_are_reported_and_reviewed_without_them(stack):
    toml = WORKERS.replace('providers = ["a", "b", "c"]', 'providers = ["a", "b", "c", "down"]') + \
        "[providers.down]\nfailures = { unavailable = 1.0 }\n"
    async with stack(toml) as s:
        answer = await s.client.ask(ASK, strategy="review", schema=SCHEMA, budget_ms=5000,
                                    providers=["a", "b", "c", "down"], strategy_options={"cycles": 1, "quality_target": 1.0})
        assert isinstance(answer, m.Answer), answer
        review = answer.metadata["review"]
        assert (review["drafts"], review["failed"]) == (["a", "b", "c"], {"down": "unavailable"})
        assert review["parts"] == {d: ["a", "b", "c"] for d in ("day1", "day2", "day3")}
        assert answer.metadata["quality"]["score"] == 1.0


TIERS = WORKERS + """
[tiers.pro]
strategy = "review"
providers = ["a", "b", "c"]
fanout = 3
[tiers.premium]
strategy = "review"
providers = ["a", "b", "c"]
fanout = 3
supervision = 1
"""


@pytest.mark.anyio
async def test_tiers_set_the_target_and_the_depth_and_only_good_answers_are_cached(stack):
    async with stack(TIERS) as s:
        pro = await s.client.ask(ASK, tier="pro", schema=SCHEMA, budget_ms=5000)
        assert isinstance(pro, m.Answer), pro
        q = pro.metadata["quality"]
        # the first review scores 2/3 (one part of three contradicted) < pro's 0.7: one regeneration
        assert (q["target"], q["cycles"], q["first_pass"], q["score"]) == (0.7, 1, False, 1.0)
        assert requests(s, "c") == 2
        premium = await s.client.ask(ASK + " in spring", tier="premium", schema=SCHEMA, budget_ms=5000)
        q = premium.metadata["quality"]
        assert (q["target"], q["cycles"], q["score"]) == (0.9, 1, 1.0)  # supervision = 1 from the tier
        assert requests(s, "c") == 4
        again = await s.client.ask(ASK + " in spring", tier="premium", schema=SCHEMA, budget_ms=5000)
        assert again.cached  # 1.0 >= 0.9: kept


# --- the policy alone: time running short ---------------------------------------------------------------


def test_the_deadline_during_review_returns_the_best_draft_degraded():
    from actors.strategies.base import Deadline, Done, Plan, Progress, Reply, options_for
    from actors.strategies.review import Review

    ask = m.Ask(id="q", messages=[m.Message(role="user", content=ASK)], schema=SCHEMA)
    policy = Review(Plan(ask=ask, candidates=["a", "b"], options=options_for(Review), deadline=10.0))
    assert [c.key for c in policy.start(0.0)] == ["draft.a", "draft.b"]
    for p in ("a", "b"):
        done = m.Completion(id=p, ask_id="q", provider=p, model="x", text="{}", data={"day1": p, "day2": p, "day3": p})
        actions = policy.step(Reply(f"draft.{p}", done), 1.0)
    assert [c.purpose for c in actions] == ["review"]
    shown, end = policy.step(Deadline(), 9.99)
    assert shown == Progress("final", end.result.text)
    assert isinstance(end, Done) and isinstance(end.result, m.Completion)
    assert end.metadata["degraded"]["reason"].startswith("the deadline came")
    # too little time left for a review at all: degraded straight after the drafts
    policy = Review(Plan(ask=ask, candidates=["a"], options=options_for(Review), deadline=1.01))
    policy.start(0.0)
    draft, _, end = policy.step(Reply("draft.a", done), 1.0)
    assert draft.stage == "draft"
    assert end.metadata["degraded"]["reason"] == "too little time left for the supervisor"


@pytest.mark.anyio
async def test_the_stream_shows_draft_then_enhanced_then_final_and_ends_with_the_same_answer(stack):
    async with stack(WORKERS) as s:
        options = {"cycles": 1, "quality_target": 1.0}
        items = [x async for x in s.client.stream(ASK, strategy="review", schema=SCHEMA, budget_ms=5000,
                                                  strategy_options=options)]
        staged = [c for c in items if isinstance(c, m.Chunk) and c.worker is None]
        assert [c.stage for c in staged] == ["draft", "enhanced", "final"]
        final = items[-1]
        assert isinstance(final, m.Answer) and final.text == staged[-1].delta
        # every call's state came too, each worker from running to its outcome (live progress)
        states = [(c.worker, c.state) for c in items if isinstance(c, m.Chunk) and c.worker is not None]
        workers = {w for w, _ in states}
        assert {"supervisor", "a (draft)"} < workers and all((w, "running") in states for w in workers), states
        assert all(states.index((w, "running")) < max(i for i, (x, st) in enumerate(states) if x == w and st != "running")
                   for w in workers), states
        plain = await s.client.ask(ASK, strategy="review", schema=SCHEMA, budget_ms=5000, strategy_options=options)
        assert plain.data == final.data and plain.metadata["quality"] == final.metadata["quality"]


@pytest.mark.anyio
async def test_a_model_judges_when_configured_and_the_validators_take_over_when_it_fails(stack):
    toml = WORKERS + """
[providers.judge]
data = { score = 0.95, issues = [], regenerate = [], data = { day1 = "d1", day2 = "d2", day3 = "d3" } }
[providers.judge-down]
failures = { unavailable = 1.0 }
[supervisor]
provider = "judge"
validators = ["tests.test_review:no_tuesday"]
"""
    async with stack(toml) as s:
        answer = await s.client.ask(ASK, strategy="review", schema=SCHEMA, budget_ms=5000,
                                    providers=["a", "b", "c"], strategy_options={"cycles": 0})
        q = answer.metadata["quality"]
        # the model's verdict, capped by the validators' share (c's draft plans a closing day)
        assert q["supervisor"] == "judge" and q["score"] == round(2 / 3, 4)
        assert answer.data == {"day1": "d1", "day2": "d2", "day3": "d3"}
        assert [i["source"] for i in q["issues"]] == ["tests.test_review:no_tuesday"]
        sup = supervisor_of(s)
        sup.judge_with = "judge-down"  # the model goes away: the validators alone decide
        answer = await s.client.ask(ASK + "!", strategy="review", schema=SCHEMA, budget_ms=5000,
                                    providers=["a", "b", "c"], strategy_options={"cycles": 0})
        assert answer.metadata["quality"]["supervisor"] == "rules"
        assert "judge-down failed: unavailable" in answer.metadata["degraded"]["reason"]
        assert "closed" not in answer.text and sup.fallbacks == 1


def test_a_part_only_a_specialist_gives_is_merged_and_a_required_part_nobody_gives_is_missing():
    review = m.Review(ask_id="q", messages=[], schema={**SCHEMA, "required": ["day1", "day2", "day3", "day4"]},
                      candidates=[cand("a", day1="x", day2="y", day3="z"), cand("db", spots=["Louvre"])])
    v = judge(review, [])
    assert v.data == {"day1": "x", "day2": "y", "day3": "z", "spots": ["Louvre"]}
    assert [(i.kind, i.where) for i in v.issues] == [(m.MISSING, "$.day4")] and v.regenerate == []
    assert v.rubric == {"agreement": 1.0, "completeness": 0.75}


def test_the_itinerary_example_runs_on_mocks():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "itinerary.py"
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, str(script), "--tier", "free", "--tier", "premium"], capture_output=True,
                          text=True, timeout=15, env=env, cwd=script.parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[premium draft]" in done.stderr and "[premium final]" in done.stderr
    assert "regenerated [('day2', 'validation')]" in done.stderr  # premium redid only the planted part
    assert "closed on Tuesdays" not in done.stdout.split("== premium ==")[1]


def test_plain_texts_are_scored_not_regenerated_by_the_mock_judge():
    texts = [m.Candidate(provider=p, text=t) for p, t in (("a", "Paris"), ("b", "Paris"), ("c", "Lyon"))]
    v = judge(m.Review(ask_id="q", messages=[], candidates=texts), [])
    assert (v.text, v.data, v.issues, v.regenerate, v.score) == ("Paris", None, [], [], 0.6667)
