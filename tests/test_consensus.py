"""Ensembles: canonical keys and the vote as tables and properties (no NATS); consensus,
self-consistency, best_match and synthesis as pure policies; and end to end on real NATS with mock
providers that disagree deterministically (quorum, stragglers cancelled, too few answers)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from actors.pure import canonical
from actors.pure.vote import Reliability, Vote, VoteOptions, cluster, learn, merge_field
from actors.strategies.base import Call, Deadline, Done, Plan, Reply, Wake, WakeAt, options_for
from actors.strategies.best_match import BestMatch
from actors.strategies.consensus import Consensus, ConsensusOptions, SelfConsistency
from bus import messages as m
from bus.errors import AllFailed

# --- canonical keys ----------------------------------------------------------------------------------

SAME = [
    ("person", ["Dr. John Smith", "Smith, John", "JOHN SMITH", "Mr. Jöhn Smith Jr.", "john  smith"]),
    ("person", ["김민준", "Minjun Kim", "Kim Min-jun", "Gim Minjun", "Kim Min Jun", "김민준 부장님"]),
    ("person", ["이서연", "Seo-yeon Lee", "Yi Seoyeon", "Rhee Seo Yeon"]),
    ("person", ["박지훈", "Park Ji-hoon", "Bak Jihun"]),
    ("person", ["최영호", "Choe Yeong-ho", "Choi Young-ho"]),
    ("organization", ["Acme Inc.", "ACME, Inc", "Acme Corporation", "The Acme Company", "acme corp"]),
    ("organization", ["(주)카카오", "Kakao Corp.", "카카오 주식회사"]),
    ("organization", ["Siemens AG", "Siemens"]),
    ("money", ["$1,200.00", "USD 1200", "1,200 dollars", "US$ 1.2k", "1200 USD"]),
    ("money", ["1.200,00 €", "EUR 1,200", "€1200", "1200 euros"]),
    ("money", ["1억 2천만원", "₩120,000,000", "KRW 120 million", "120,000,000원"]),
    ("date", ["2026-11-03", "November 3, 2026", "3 Nov 2026", "Tuesday, November 3rd, 2026", "03.11.2026",
              "11/03/2026", "2026년 11월 3일", "2026/11/03", "le 3 novembre 2026", "2026-11-03T10:00:00Z"]),
    ("email", ["John <John.Smith@Acme.com>", "mailto:john.smith@acme.com", "JOHN.SMITH@ACME.COM"]),
    ("title", ["VP of Sales", "Sales VP", "Vice President, Sales", "vice president of sales"]),
    ("title", ["Senior Procurement Manager", "Sr. Procurement Mgr", "Procurement Manager, Senior"]),
    ("title", ["COO", "Chief Operating Officer"]),
]

APART = [
    ("person", "Johnson", "Johnston"), ("person", "Daniel Park", "Danielle Park"),
    ("person", "John Smith", "Jane Smith"), ("person", "Kim Minjun", "Kim Minji"),
    ("organization", "Acme", "Acme Capital"), ("organization", "Vertex", "Vortex"),
    ("money", "USD 603", "EUR 603"), ("money", "12,405", "12,450"), ("money", "603", "USD 603"),
    ("date", "2026-11-03", "2026-11-04"), ("date", "2026-11-03", "2026-03-11"), ("date", "2026-11-03", "2027-11-03"),
    ("title", "Senior Procurement Manager", "Procurement Manager"), ("title", "COO", "CFO"),
    ("email", "kim@acme.com", "kim@acme.co.kr"),
]


@pytest.mark.parametrize(("kind", "values"), SAME)
def test_surface_variants_share_one_key(kind, values):
    keys = {canonical.key(kind, v) for v in values}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(("kind", "a", "b"), APART)
def test_look_alikes_keep_their_own_clusters(kind, a, b):
    assert canonical.key(kind, a) != canonical.key(kind, b)
    assert len(cluster(kind, [Vote("p", a), Vote("q", b)])) == 2


def test_fuzzy_names_merge_misspellings_and_initials_only_by_complete_linkage():
    assert len(cluster("person", [Vote("a", "Mark Jonhson"), Vote("b", "Mark Johnson")])) == 1
    # "J. Smith" fits John and Jane, but John and Jane do not fit each other: never one cluster
    clusters = cluster("person", [Vote("a", "John Smith"), Vote("b", "J. Smith"), Vote("c", "Jane Smith")])
    assert sorted(len(c.members) for c in clusters) == [1, 2]


def test_ambiguous_slashed_dates_follow_day_first_and_unambiguous_ones_do_not():
    assert canonical.date_key("03/11/2026") == "2026-03-11"
    assert canonical.date_key("03/11/2026", day_first=True) == "2026-11-03"
    assert canonical.date_key("13/11/2026") == canonical.date_key("11/13/2026") == "2026-11-13"


def test_kinds_from_schema_annotation_and_names():
    schema = {"type": "object", "properties": {
        "who": {"type": "string", "x-llmbus-match": "person"}, "when": {"type": "string", "format": "date"},
        "mail": {"type": "string", "format": "email"}, "n": {"type": "integer"}, "tier": {"enum": ["a", "b"]},
        "other": {"type": "string"}}}
    assert canonical.kinds_of(schema) == {"who": "person", "when": "date", "mail": "email", "n": "number",
                                          "tier": "label", "other": "exact"}
    names = {"company_name": "organization", "sender_email": "email", "payment_date": "date",
             "due_amount": "money", "contact_name": "person", "job_title": "title", "invoice_number": "exact"}
    assert {n: canonical.infer_kind(n, []) for n in names} == names
    assert canonical.infer_kind("x", ["a@b.com", "c@d.org"]) == "email"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9_999_999), st.sampled_from(["USD", "EUR", "KRW", "GBP"]))
def test_money_round_trips_through_its_written_forms(amount, code):
    symbol = {"USD": "$", "EUR": "€", "KRW": "₩", "GBP": "£"}[code]
    forms = [f"{code} {amount}", f"{symbol}{amount:,}", f"{amount:,} {code}", f"{symbol}{amount:,}.00"]
    assert {canonical.money_key(f) for f in forms} == {f"{code} {amount:.2f}"}


@settings(max_examples=60, deadline=None)
@given(st.dates(min_value=__import__("datetime").date(1990, 1, 1), max_value=__import__("datetime").date(2150, 12, 31)))
def test_dates_round_trip_through_their_written_forms(d):
    iso = d.isoformat()
    forms = [iso, d.strftime("%B %d, %Y"), d.strftime("%d %b %Y"), d.strftime("%A, %B %d, %Y"),
             d.strftime("%d.%m.%Y"), f"{d.year}년 {d.month}월 {d.day}일"]
    if d.day > 12:
        forms.append(d.strftime("%d/%m/%Y"))
    assert {canonical.date_key(f) for f in forms} == {iso}


@settings(max_examples=80, deadline=None)
@given(st.from_regex(r"[A-Z][a-z]{3,8}", fullmatch=True), st.from_regex(r"[A-Z][a-z]{3,8}", fullmatch=True),
       st.sampled_from(["t", "e", "s", "son", "ne", "le", "a"]))
def test_a_name_with_letters_added_is_never_merged(first, last, extra):
    vs = [Vote("a", f"{first} {last}"), Vote("b", f"{first} {last}{extra}")]
    assert len(cluster("person", vs)) == 2


@settings(max_examples=80, deadline=None)
@given(st.from_regex(r"[A-Z][a-z]{2,8}", fullmatch=True), st.sampled_from(["Capital", "Labs", "Group Asia", "X"]))
def test_an_organization_with_a_word_added_is_never_merged(name, word):
    assert len(cluster("organization", [Vote("a", f"{name} Inc."), Vote("b", f"{name} {word} Inc.")])) == 2


# --- the vote ----------------------------------------------------------------------------------------


def test_a_lone_voter_gets_its_accuracy_as_posterior_and_agreement_raises_it():
    rel = Reliability(prior=0.8)
    alone, _ = merge_field("f", "exact", [Vote("a", "x")], rel)
    assert alone.confidence == pytest.approx(0.8)
    two, _ = merge_field("f", "exact", [Vote("a", "x"), Vote("b", "x"), Vote("c", "y")], rel)
    assert two.value == "x" and two.confidence > 0.8 and two.members == ["a", "b"]
    assert two.dissent == [("c", "y")]


def test_a_tie_abstains_and_low_confidence_abstains_with_its_reason():
    rel = Reliability()
    tie, _ = merge_field("f", "exact", [Vote("a", "x"), Vote("b", "y")], rel)
    assert tie.value is None and "tie" in tie.reason
    low, _ = merge_field("f", "exact", [Vote("a", "x", 0.9), Vote("b", None)], Reliability(prior=0.6),
                         VoteOptions(min_confidence=0.7))
    assert low.value is None and "min_confidence" in low.reason
    none, _ = merge_field("f", "exact", [Vote("a", None), Vote("b", "")], rel)
    assert none.value is None and "abstained" in none.reason


def test_learned_reliability_lets_one_good_provider_outvote_two_bad_ones():
    # a is always right; b and c each err half the time, on different values
    items = []
    for i in range(200):
        truth = f"v{i}"
        b = truth if i % 2 else f"b{i}"
        c = truth if i % 4 < 2 else f"c{i}"
        items.append({"f": ("exact", [Vote("a", truth), Vote("b", b), Vote("c", c)])})
    rel = learn(items)
    assert rel.accuracy("a", "f") > 0.9 > rel.accuracy("b", "f")
    result, _ = merge_field("f", "exact", [Vote("a", "t"), Vote("b", "u"), Vote("c", "w")], rel)
    assert result.value == "t"


def test_calibration_gives_nothing_to_an_overconfident_provider():
    rel = Reliability()
    for i in range(300):  # "over" always says 0.9 and is right 60 % of the time; "under" says 0.5, right 90 %
        rel.observe("over", "f", 0.9, 1.0 if i % 10 < 6 else 0.0)
        rel.observe("under", "f", 0.5, 1.0 if i % 10 < 9 else 0.0)
    assert rel.calibrated("over", "f", 0.9) == pytest.approx(0.6, abs=0.02)
    assert rel.calibrated("under", "f", 0.5) == pytest.approx(0.9, abs=0.02)


# --- the policies as tables --------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "x-llmbus-match": "person"},
                                           "amount": {"type": "string", "x-llmbus-match": "money"}}}
ASK = m.Ask(id="q", messages=[m.Message(role="user", content="extract")], schema=SCHEMA)


def answer(provider: str, **data) -> m.Completion:
    return m.Completion(id="c-" + provider, ask_id="q", provider=provider, model=provider + "-1", text="{}",
                        data=data, confidence=0.8)


def plan(cls, candidates, **opts) -> Plan:
    return Plan(ASK, list(candidates), options_for(cls, {"learn": False, **opts} if cls is not BestMatch else opts),
                10.0)


def test_consensus_scatters_waits_out_patience_after_quorum_and_merges():
    p = Consensus(plan(Consensus, ["a", "b", "c"], patience_ms=100))
    assert [c.provider for c in p.start(0.0)] == ["a", "b", "c"]
    assert p.step(Reply("0", answer("a", name="Dr. Ann Lee", amount="$1,200"), 1, "a"), 0.01) == []
    assert p.step(Reply("1", answer("b", name="Lee, Ann", amount="EUR 1200"), 1, "b"), 0.02) == [WakeAt(pytest.approx(0.12))]
    [done] = p.step(Wake(0.12), 0.12)
    assert isinstance(done, Done) and done.result.data["name"] == "Dr. Ann Lee"
    assert "amount" not in done.result.data  # USD against EUR: a tie, abstained (optional, not nullable: left out)
    report = done.metadata["consensus"]
    assert report["name"]["support"] == ["a", "b"] and "tie" in report["amount"]["reason"]
    assert done.providers == ["a", "b"]


def test_consensus_with_fewer_answers_than_quorum_fails_naming_each_outcome():
    p = Consensus(plan(Consensus, ["a", "b", "c"], quorum=2))
    p.start(0.0)
    p.step(Reply("0", m.Failure(kind=m.TIMEOUT, message="slow"), 1, "a"), 0.1)
    p.step(Reply("1", m.Failure(kind=m.INVALID_OUTPUT, message="bad json"), 1, "b"), 0.1)
    [done] = p.step(Reply("2", answer("c", name="X", amount="1"), 1, "c"), 0.1)
    assert done.result.kind == m.ALL_FAILED
    assert "a: timeout" in done.result.message and "b: invalid_output" in done.result.message


def test_self_consistency_samples_one_provider_and_takes_the_majority():
    p = SelfConsistency(plan(SelfConsistency, ["a", "b"], samples=3, quorum=3, patience_ms=0))
    calls = p.start(0.0)
    assert [c.provider for c in calls] == ["a", "a", "a"] and len({c.key for c in calls}) == 3
    p.step(Reply("0", answer("a", name="Ann Lee", amount="$5"), 1, "a"), 0.1)
    p.step(Reply("1", answer("a", name="Ann Lee", amount="$6"), 1, "a"), 0.1)
    [done] = p.step(Reply("2", answer("a", name="Lee, Ann", amount="$5.00"), 1, "a"), 0.1)
    assert done.result.data == {"name": "Ann Lee", "amount": "$5"}


def test_best_match_picks_the_most_confident_valid_answer():
    p = BestMatch(plan(BestMatch, ["a", "b"], patience_ms=0, quorum=2))
    p.start(0.0)
    low = msgspec.structs.replace(answer("a", name="A", amount="1"), confidence=0.3)
    p.step(Reply("0", low, 1, "a"), 0.1)
    [done] = p.step(Reply("1", answer("b", name="B", amount="2"), 1, "b"), 0.1)
    assert done.result.provider == "b" and done.metadata["best_match"]["winner"] == "b"


# --- end to end --------------------------------------------------------------------------------------

TRIO = """
[router]
providers = ["a", "b", "c", "slow", "broken"]
[providers.a]
data = { name = "Dr. Ann Lee", amount = "$1,200.00" }
confidence = 0.9
[providers.b]
data = { name = "Lee, Ann", amount = "USD 1200" }
confidence = 0.7
[providers.c]
data = { name = "Anne Leigh", amount = "EUR 1,200" }
confidence = 0.8
[providers.slow]
latency = { dist = "fixed", ms = 3000 }
[providers.broken]
failures = { malformed_output = 1.0 }
[providers.solo]
seed = 7
variants = { name = ["Ann Lee", "Ann Lee", "Lee, Ann", "Bob Stone"], amount = ["$5", "5 USD", "$5.00", "$50"] }
[providers.synth]
[providers.down]
failures = { unavailable = 1.0 }
[router.strategies.consensus]
learn = false
"""

@pytest.mark.anyio
async def test_consensus_end_to_end_merges_and_cancels_the_straggler(stack):
    async with stack(TRIO) as s:
        answer = await s.client.ask("extract", strategy="consensus", schema=SCHEMA, budget_ms=5000,
                                    providers=["a", "b", "c", "slow", "broken"],
                                    strategy_options={"patience_ms": 50})
        assert answer.strategy == "consensus"
        assert answer.data["name"] in ("Dr. Ann Lee", "Lee, Ann")
        assert canonical.money_key(answer.data["amount"]) == "USD 1200.00"  # a and b; c said EUR
        assert sorted(answer.providers) == ["a", "b"]
        report = answer.metadata["consensus"]
        assert report["name"]["dissent"] == [{"provider": "c", "value": "Anne Leigh"}]
        assert 0.5 < answer.confidence < 1.0
        outcomes = {st.provider: st.outcome for st in answer.route}
        assert outcomes == {"a": "ok", "b": "ok", "c": "ok", "slow": "cancelled", "broken": "invalid_output"}
        assert s.actor("provider.slow").statistics().endpoints["complete"].num_requests == 1


@pytest.mark.anyio
async def test_consensus_with_too_few_answers_is_all_failed(stack):
    async with stack(TRIO) as s:
        with pytest.raises(AllFailed) as info:
            await s.client.ask("extract", strategy="consensus", schema=SCHEMA, budget_ms=1200,
                               providers=["a", "slow", "broken"], strategy_options={"quorum": 2})
        failure = info.value.failure
        assert "1 usable answer(s), quorum 2" in failure.message and "broken: invalid_output" in failure.message
        assert {st.provider: st.outcome for st in failure.route}["slow"] in ("cancelled", "timeout")


@pytest.mark.anyio
async def test_self_consistency_and_best_match_end_to_end(stack):
    async with stack(TRIO) as s:
        answer = await s.client.ask("extract", strategy="self_consistency", schema=SCHEMA, budget_ms=3000,
                                    providers=["solo"], strategy_options={"samples": 7, "quorum": 5,
                                                                          "learn": False})
        assert [st.provider for st in answer.route] == ["solo"] * 7
        assert canonical.person_key(answer.data["name"]) == "ann lee"
        assert canonical.money_key(answer.data["amount"]) == "USD 5.00"
        best = await s.client.ask("extract", strategy="best_match", schema=SCHEMA, budget_ms=3000,
                                  providers=["a", "b", "c"])
        assert best.providers == ["a"] and best.data["name"] == "Dr. Ann Lee"
        assert best.metadata["best_match"]["winner"] == "a"


@pytest.mark.anyio
async def test_synthesis_merges_with_its_own_call_and_degrades_when_the_synthesizer_is_down(stack):
    async with stack(TRIO) as s:
        answer = await s.client.ask("what is llmbus?", strategy="synthesis", budget_ms=3000,
                                    providers=["synth", "a", "b", "c"], strategy_options={"synthesizer": "synth"})
        assert answer.providers == ["a", "b", "c", "synth"] or sorted(answer.providers) == ["a", "b", "c", "synth"]
        steps = [(st.provider, st.purpose) for st in answer.route]
        assert steps[-1] == ("synth", "synthesis") and len(steps) == 4
        # the synthesizer (an echo mock) got the template, the question and every candidate
        assert "## Candidates" in answer.text and "what is llmbus?" in answer.text
        assert all(f"({p})" in answer.text for p in "abc") and "degraded" not in answer.metadata
        down = await s.client.ask("what is llmbus?", strategy="synthesis", budget_ms=3000,
                                  providers=["a", "b"], strategy_options={"synthesizer": "down"})
        assert down.metadata["degraded"]["to"] == "best_match" and "down failed" in down.metadata["degraded"]["reason"]
        assert [(st.provider, st.outcome) for st in down.route][-1] == ("down", "unavailable")
        structured = await s.client.ask("extract", strategy="synthesis", schema=SCHEMA, budget_ms=3000,
                                        providers=["a", "b", "c"], strategy_options={"synthesizer": "synth"})
        assert set(structured.data) == {"name", "amount"} and structured.route[-1].purpose == "synthesis"


# --- offline: scripts/consensus_eval.py and the simulation -------------------------------------------


def test_consensus_eval_reads_the_recorded_format_and_writes_members(tmp_path):
    from scripts import consensus_eval

    lines = [
        {"id": "1", "email_text": "…", "lang": "en", "responses": {
            "a": {"fields": {"contact_name": {"value": "Dr. Ann Lee", "confidence": 0.9},
                             "amount": {"value": "$1,200", "confidence": None}}, "latency_ms": 5},
            "b": {"fields": {"contact_name": {"value": "Lee, Ann", "confidence": 0.6},
                             "amount": {"value": None, "confidence": None}}, "cost_usd": 0.1},
            "c": {"fields": None, "error": "timeout"}}},
        {"id": "2", "responses": {
            "a": {"fields": {"contact_name": {"value": "Bob Stone"}, "amount": {"value": "EUR 5"}}},
            "b": {"fields": {"contact_name": {"value": "STONE, BOB"}, "amount": {"value": "5 USD"}}},
            "c": {"fields": {"contact_name": {"value": "Bob Stone"}, "amount": {"value": "€5.00"}}}}},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(__import__("json").dumps(x) for x in lines) + "\n")
    assert consensus_eval.main([str(src), str(dst)]) == 0
    out = [__import__("json").loads(x) for x in dst.read_text().splitlines()]
    assert out[0]["id"] == "1" and canonical.person_key(out[0]["fields"]["contact_name"]) == "ann lee"
    assert out[0]["members"]["contact_name"] == ["a", "b"] and out[0]["members"]["amount"] == ["a"]
    assert canonical.money_key(out[1]["fields"]["amount"]) == "EUR 5.00"
    assert sorted(out[1]["members"]["amount"]) == ["a", "c"] and len(out[1]["members"]["contact_name"]) == 3


def test_the_simulation_shows_consensus_above_every_single_provider_and_near_the_optimum():
    from scripts import ensemble_sim

    result = ensemble_sim.evaluate(300, seed=3, alternatives=2.0)["methods"]
    best_single = max(result[p]["accuracy"][0] for p in ensemble_sim.PROVIDERS)
    assert result["consensus"]["accuracy"][0] >= best_single + 5
    assert result["consensus"]["accuracy"][0] >= result["bayes_optimum"]["accuracy"][0] - 2.5
    assert result["consensus"]["false_merges"][0] < 0.5


def test_an_abstaining_field_the_schema_requires_non_null_keeps_its_best_candidate():
    from actors.strategies.best_match import schema_valid
    from actors.strategies.consensus import merge_answers, not_nullable

    schema = {"type": "object", "required": ["name", "amount"], "properties": {
        "name": {"type": "string", "x-llmbus-match": "person"},
        "amount": {"type": "string", "x-llmbus-match": "money"},
        "note": {"type": "string"}, "maybe": {"type": ["string", "null"]}}}
    assert not_nullable(schema) == ({"name", "amount", "note"}, {"name", "amount"})
    good = [answer("a", name="Ann Lee", amount="USD 5", note="x", maybe="y"),
            answer("b", name="Lee, Ann", amount="EUR 5", note="z", maybe="w")]
    options = options_for(Consensus, {"learn": False, "min_confidence": 0.9})
    data, report, _, _ = merge_answers(good, schema, options, Reliability(prior=0.8), False)
    assert data["amount"] in ("USD 5", "EUR 5") and report["amount"]["kept"]  # a tie, kept for the schema
    assert "tie" in report["amount"]["reason"] and len(report["amount"]["support"]) == 1
    assert "note" not in data and data["maybe"] is None  # optional: left out (not nullable) or null
    assert schema_valid(data, schema)
    nobody = [answer("a", name=None, amount="USD 5"), answer("b", name=None, amount="USD 5")]
    data, report, _, _ = merge_answers(nobody, schema, options, Reliability(prior=0.8), False)
    assert data["name"] is None and "kept" not in report["name"]  # nothing to keep


class Instant:
    """Calls that all answer at once (zero-latency providers), each with 10 tokens in and 5 out."""

    def __init__(self) -> None:
        self.n = 0
        self.cancelled: list[str] = []

    def new_id(self) -> str:
        self.n += 1
        return f"call-{self.n}"

    async def call(self, call, call_id, deadline):
        import asyncio

        await asyncio.sleep(0)
        c = answer(call.provider, name="Ann Lee", amount="$5")
        return msgspec.structs.replace(c, id=call_id, usage=m.TokenUsage(input_tokens=10, output_tokens=5))

    async def cancel(self, record, reason):
        self.cancelled.append(record.call_id)


@pytest.mark.anyio
async def test_a_straggler_that_answered_as_the_quorum_closed_is_in_the_route_and_the_usage():
    import anyio

    from actors.router.actor import finish
    from actors.strategies import runner

    p = Consensus(Plan(ASK, ["a", "b", "c"], options_for(Consensus, {"learn": False, "patience_ms": 0}),
                       anyio.current_time() + 5))
    with anyio.fail_after(5):
        outcome = await runner.run(p, Instant(), deadline=anyio.current_time() + 5, clock=anyio.current_time)
    reply = finish(ASK, "consensus", outcome)
    assert isinstance(reply, m.Answer) and reply.metadata["answers"] == 2  # closed at the quorum
    answered = [s for s in reply.route if s.outcome == "ok"]
    assert reply.usage.input_tokens == 10 * len(answered) and reply.usage.output_tokens == 5 * len(answered)
    assert len(answered) == 3  # the third answered too: its tokens were spent, so they count


def test_plain_text_consensus_on_a_tie_keeps_the_best_supported_answer_rather_than_none():
    text_ask = m.Ask(id="t", messages=[m.Message(role="user", content="say something")])
    p = Consensus(Plan(text_ask, ["a", "b"], options_for(Consensus, {"learn": False, "patience_ms": 0}), 10.0))
    p.start(0.0)

    def said(provider: str, text: str) -> m.Completion:
        return m.Completion(id="c-" + provider, ask_id="t", provider=provider, model=provider + "-1", text=text,
                            confidence=0.8)

    p.step(Reply("0", said("a", "The sky is blue because of Rayleigh scattering."), 1, "a"), 0.01)
    [done] = p.step(Reply("1", said("b", "Bananas are yellow."), 1, "b"), 0.02)
    assert isinstance(done, Done) and done.result.text in {"The sky is blue because of Rayleigh scattering.",
                                                            "Bananas are yellow."}
    assert "kept" in done.metadata["consensus"]["text"] and len(done.providers) == 1
