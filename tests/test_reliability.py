"""Consensus reliability shared by every router through KV (actors.router.reliability): the pure
merge of counts, routers learning from each other's merges, labels from feedback, a restart."""

from __future__ import annotations

import json

import pytest

from actors.pure.vote import Reliability, combine
from actors.router import reliability as shared
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "x-llmbus-match": "person"},
                                           "amount": {"type": "string", "x-llmbus-match": "money"}}}
TRIO = """
[router]
providers = ["a", "b", "c"]
[providers.a]
data = { name = "Dr. Ann Lee", amount = "$1,200.00" }
confidence = 0.9
[providers.b]
data = { name = "Lee, Ann", amount = "USD 1200" }
confidence = 0.7
[providers.c]
data = { name = "Anne Leigh", amount = "EUR 1,200" }
confidence = 0.8
"""


def test_export_load_and_combine_add_counts_and_fade_the_old():
    rel = Reliability()
    rel.observe("a", "f", 0.9, 1.0)
    rel.observe("a", "f", 0.9, 0.0, weight=3.0)
    data = rel.export("a")
    back = Reliability()
    back.load("a", json.loads(json.dumps(data)))
    assert back.accuracy("a", "f") == pytest.approx(rel.accuracy("a", "f"))
    assert back.calibrated("a", "f", 0.9) == pytest.approx(rel.calibrated("a", "f", 0.9))
    both = combine(data, data)
    assert both["fields"]["f"] == [2.0, 8.0] and both["overall"] == [2.0, 8.0]
    faded = combine({"fields": {"f": [10.0, 10.0]}}, {"fields": {"f": [0.0, 1.0]}}, decay=0.5)
    assert faded["fields"]["f"] == [5.0, 6.0]
    labelled = combine(combine(None, {"labels": {"f": [1.0, 1.0]}}, 0.5), {"labels": {"f": [0.0, 1.0]}}, 0.5)
    assert labelled["labels"]["f"] == [1.0, 2.0]  # labels are never faded


def test_a_label_judges_each_answer_by_canonical_key():
    record = {"fields": {"name": {"kind": "person", "votes": [["a", "Dr. Ann Lee", 0.9], ["b", "Lee, Ann", 0.7],
                                                              ["c", "Anne Leigh", 0.8], ["d", None, None]]}}}
    deltas, rows = shared.judge(record, {"name": "Ann Lee"})
    assert {r["provider"]: r["right"] for r in rows} == {"a": True, "b": True, "c": False}
    assert deltas["c"].fields[("c", "name")] == [0.0, shared.LABEL_WEIGHT]
    with pytest.raises(KeyError):
        shared.judge(record, {"nope": "x"})


@pytest.mark.anyio
async def test_routers_share_what_consensus_learned_and_a_label_and_a_new_router_starts_warm(stack):
    async with stack(TRIO) as s:
        second = await s.add("router")
        first = s.actor("router")
        views = [first.reliability.shared, second.reliability.shared]
        ids = []
        for i in range(6):
            answer = await s.client.ask("extract", strategy="consensus", schema=SCHEMA, budget_ms=5000,
                                        providers=["a", "b", "c"], strategy_options={"quorum": 3},
                                        ask_id=f"rel-{i}", cache="skip")
            ids.append(answer.id)
        # every router sees every merge's counts (c dissents on both fields: less reliable than a and b)
        await wait_until(lambda: all(v.overall.get("c", [0, 0])[1] >= 11.5 for v in views), within_s=10,
                         what="both routers see every merge")
        for v in views:
            assert v.accuracy("c", "name") < v.accuracy("a", "name")
            assert v.overall["a"][1] == pytest.approx(views[0].overall["a"][1], rel=0.05)

        before = views[1].accuracy("c", "name")
        result = await shared.feedback(s.client.nc, s.client.subjects, ids[0], {"name": "Anne Leigh"})
        assert {r["provider"]: r["right"] for r in result["answers"]} == {"a": False, "b": False, "c": True}
        await wait_until(lambda: views[1].accuracy("c", "name") > before + 0.05, within_s=10,
                         what="the label reaches the other router")
        stored = await shared.read_all(s.client.nc, s.client.subjects)
        assert stored["c"]["labels"]["name"] == [1.0, 1.0]
        report = shared.summary(stored)
        assert report["c"]["fields"]["name"]["labelled"] == 1 and report["a"]["fields"]["name"]["labelled_right"] == 0
        with pytest.raises(FileExistsError):  # a label counts once
            await shared.feedback(s.client.nc, s.client.subjects, ids[0], {"name": "Ann Lee"})
        with pytest.raises(LookupError):
            await shared.feedback(s.client.nc, s.client.subjects, "never-asked", {"name": "x"})

        # a router started later (or restarted) reads the same counts from KV
        for r in (first, second):
            await r.reliability.flush()
        third = await s.add("router")
        await wait_until(lambda: third.reliability.shared.overall.keys() >= {"a", "b", "c"}, within_s=10,
                         what="a new router loads the stored counts")
        assert third.reliability.shared.accuracy("c", "name") == pytest.approx(views[1].accuracy("c", "name"),
                                                                               abs=0.02)
