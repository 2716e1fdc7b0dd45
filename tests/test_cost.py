"""Cost: pricing, the ledger (counted once, for good; exact across restarts) and budgets."""

from __future__ import annotations

import anyio
import pytest

from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.subjects import COST_BUDGET_SET, COST_BUDGETS, COST_REPORT, COST_RESERVE
from bus.errors import BudgetExceeded
from actors.pure.pricing import Price, Pricing
from tests.helpers import wait_until

PRICES = Pricing({
    "openai": {"gpt-4o-mini": Price(input=0.15, output=0.60, cached_input=0.075),
               "gpt-4o": Price(input=2.5, output=10.0)},
    "mock": {"m-1": Price(input=1.0, output=2.0)},
})


@pytest.mark.parametrize(
    ("kind", "model", "usage", "expected"),
    [
        ("openai", "gpt-4o-mini", m.TokenUsage(input_tokens=1_000_000), 0.15),
        ("openai", "gpt-4o-mini", m.TokenUsage(output_tokens=1_000_000), 0.60),
        ("openai", "gpt-4o-mini", m.TokenUsage(input_tokens=1_000_000, cached_tokens=1_000_000), 0.075),
        ("openai", "gpt-4o-mini-2024-07-18", m.TokenUsage(input_tokens=2_000_000), 0.30),  # dated name: prefix
        ("openai", "gpt-4o-2024-08-06", m.TokenUsage(input_tokens=1_000_000), 2.5),  # the longest prefix wins
        ("openai", "gpt-4o", m.TokenUsage(input_tokens=500_000, cached_tokens=500_000), 1.25),  # no cached rate
        ("openai", "o9-unknown", m.TokenUsage(input_tokens=10), None),
        ("gemini", "gpt-4o-mini", m.TokenUsage(input_tokens=10), None),  # prices are per kind
    ],
)
def test_pricing(kind, model, usage, expected):
    cost = PRICES.cost(kind, model, usage)
    assert cost == (pytest.approx(expected) if expected is not None else None)


def test_worst_case_is_every_prompt_token_and_max_tokens():
    assert PRICES.worst_case("mock", "m-1", 1000, 500) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


def test_shipped_pricing_file_loads():
    from actors.settings import Settings

    table = Pricing.load(Settings().pricing_path())
    assert table.price("openai", "gpt-4o-mini") is not None
    assert all(p.taken and p.source for models in table.table.values() for p in models.values())


COST_TOML = """
[router]
strategy = "single"
providers = ["p"]

[providers.p]
model = "m-1"
latency = {{ dist = "fixed", ms = {ms} }}

[providers.unpriced]
model = "nobody-prices-this"

[cost]
pricing = "{pricing}"
"""


@pytest.fixture
def pricing_file(tmp_path):
    path = tmp_path / "pricing.toml"
    path.write_text('[mock."m-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-11-25"\nsource = "test"\n')
    return str(path)


def usage_event(ask_id: str, call_id: str, tokens: int = 1000, user: str | None = None) -> m.Usage:
    return m.Usage(ask_id=ask_id, call_id=call_id, provider="p", model="m-1",
                   usage=m.TokenUsage(input_tokens=tokens), user=user, strategy="single", at=1_764_000_000.0)


async def report(s, by: str = "provider") -> m.CostReport:
    reply = await s.client.rpc.service(COST_REPORT, m.CostQuery(by=by), deadline=deadline_in(2000))
    assert isinstance(reply, m.CostReport), reply
    return reply


@pytest.mark.anyio
async def test_answers_carry_their_cost_and_unknown_models_are_unknown(stack, pricing_file):
    async with stack(COST_TOML.format(ms=0, pricing=pricing_file)) as s:
        answer = await s.client.ask("one two three", budget_ms=3000)
        expected = (answer.usage.input_tokens * 1.0 + answer.usage.output_tokens * 2.0) / 1e6
        assert answer.cost_usd == pytest.approx(expected) and answer.cost_usd > 0
        unknown = await s.client.ask("x", providers=["unpriced"], budget_ms=3000)
        assert unknown.cost_usd is None  # unknown, never silently zero
        cost = next(a for a in s.actors if a.kind == "cost")
        await wait_until(lambda: len(cost.totals.calls) == 2, what="both calls in the ledger")
        r = await report(s, by="model")
        lines = {line.key: line for line in r.lines}
        assert lines["m-1"].cost_usd == pytest.approx(expected)
        assert lines["nobody-prices-this"].unpriced_calls == 1 and r.total.unpriced_calls == 1


@pytest.mark.anyio
async def test_the_same_usage_event_twice_is_counted_once(stack, pricing_file):
    async with stack(COST_TOML.format(ms=0, pricing=pricing_file), names=["cost"]) as s:
        cost = s.actors[0]
        subject = s.client.subjects.usage("p")
        for _ in range(3):  # a republished event: same ask id and call id
            await s.client.nc.publish(subject, codec.encode(usage_event("a1", "c1")))
        await s.client.nc.publish(subject, codec.encode(usage_event("a1", "c2")))  # a second call of that ask
        await wait_until(lambda: "c2" in cost.totals.calls, what="the last event counted")
        r = await report(s)
        assert r.total.calls == 2 and r.total.asks == 1
        assert r.total.cost_usd == pytest.approx(2 * 1000 * 1.0 / 1e6)


@pytest.mark.anyio
async def test_totals_are_exact_across_a_restart_mid_stream(stack, pricing_file):
    async with stack(COST_TOML.format(ms=0, pricing=pricing_file), names=["cost"]) as s:
        first = s.actors[0]
        subject = s.client.subjects.usage("p")
        for i in range(50):
            await s.client.nc.publish(subject, codec.encode(usage_event(f"a{i}", "c")))
        await wait_until(lambda: len(first.totals.calls) >= 1, what="consumption started")
        first.stop()  # stops mid-stream: some events are counted, some not yet
        await wait_until(lambda: first.nc.is_closed, what="stopped")
        for i in range(50, 100):  # published while no cost actor runs
            await s.client.nc.publish(subject, codec.encode(usage_event(f"a{i}", "c")))
        for i in range(0, 100, 10):  # and some duplicates of both halves
            await s.client.nc.publish(subject, codec.encode(usage_event(f"a{i}", "c")))
        again = await s.add("cost")
        await wait_until(lambda: len(again.totals.seen) == 100, what="all 100 calls counted", within_s=10)
        await anyio.sleep(0.2)  # duplicates published last must not add anything
        r = await report(s)
        assert r.total.calls == 100
        assert r.total.cost_usd == pytest.approx(100 * 1000 * 1.0 / 1e6)


@pytest.mark.anyio
@pytest.mark.parametrize("cost_actors", [1, 2])
async def test_budget_race_exactly_the_affordable_asks_succeed(stack, pricing_file, cost_actors):
    toml = COST_TOML.format(ms=20, pricing=pricing_file)
    async with stack(toml) as s:
        for _ in range(cost_actors - 1):  # a second cost actor shares the reservations (queue group)
            await s.add("cost")
        router = s.actor("router")
        ask_params = m.Params(max_tokens=10)
        sample = m.Ask(id="x", messages=[m.Message(role="user", content="q00")], params=ask_params)
        worst = router.budgets.worst_case("p", sample)
        reply = await s.client.rpc.service(COST_BUDGET_SET,
            m.BudgetSet(scope="user", name="carol@example.com", period="day", limit_usd=10 * worst + worst / 2), deadline=deadline_in(2000),
        )
        assert isinstance(reply, m.BudgetReport)
        await wait_until(lambda: ("user", "carol@example.com") in router.budgets.scoped, what="the router sees it")

        answers: list[m.Answer] = []
        refused: list[BudgetExceeded] = []

        async def one(i: int) -> None:
            try:
                answers.append(await s.client.ask(f"q{i:02d}", user="carol@example.com", params=ask_params,
                                                  budget_ms=10_000))
            except BudgetExceeded as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
        assert len(answers) == 10, (len(answers), [str(e) for e in refused[:2]])
        assert len(refused) == 90
        assert "carol@example.com" in refused[0].message and "limit" in refused[0].message
        cost = next(a for a in s.actors if a.kind == "cost")
        await wait_until(lambda: len(cost.totals.calls) == 10, what="the ledger has the 10 answered calls")
        r = await report(s, by="user")
        assert r.lines[0].key == "carol@example.com"
        assert r.lines[0].cost_usd == pytest.approx(sum(a.cost_usd for a in answers))


@pytest.mark.anyio
async def test_a_per_ask_ceiling_needs_no_cost_actor(stack, pricing_file):
    async with stack(COST_TOML.format(ms=0, pricing=pricing_file), names=["router", "provider.p"]) as s:
        with pytest.raises(BudgetExceeded) as info:
            await s.client.ask("hello", max_cost_usd=1e-9, budget_ms=3000)
        assert "max_cost_usd" in info.value.message
        answer = await s.client.ask("hello", max_cost_usd=0.01, budget_ms=3000)
        assert answer.cost_usd > 0


@pytest.mark.anyio
async def test_a_budget_that_cannot_be_checked_is_not_spent(stack, pricing_file):
    async with stack(COST_TOML.format(ms=0, pricing=pricing_file)) as s:
        router = s.actor("router")
        await s.client.rpc.service(COST_BUDGET_SET,
                                m.BudgetSet(scope="tier", name="free", period="month", limit_usd=1.0), deadline=deadline_in(2000))
        await wait_until(lambda: ("tier", "free") in router.budgets.scoped, what="seen")
        cost = next(a for a in s.actors if a.kind == "cost")
        cost.stop()
        await wait_until(lambda: cost.nc.is_closed, what="cost actor stopped")
        with pytest.raises(Exception) as info:
            await s.client.ask("x", tier="free", budget_ms=3000)
        assert info.value.kind == m.UNAVAILABLE and "cannot be checked" in info.value.message
        assert (await s.client.ask("x", tier="pro", budget_ms=3000)).text  # no budget: no round trip needed


def test_holds_are_tagged_keyword_structs_and_the_old_array_form_is_still_read():
    import json

    from actors.cost.actor import Hold, decode_holds

    hold = Hold(amount=0.5, expires_at=2e9, budgets=["user:alice:day"])
    assert json.loads(codec.encode({"c1": hold})) == {
        "c1": {"type": "Hold", "amount": 0.5, "expires_at": 2e9, "budgets": ["user:alice:day"]}}
    assert decode_holds(codec.encode({"c1": hold})) == {"c1": hold}
    old = b'{"c0":[0.25,2000000000.0,["tier:free:month"]],"c1":' + codec.encode(hold) + b"}"
    assert decode_holds(old) == {"c0": Hold(amount=0.25, expires_at=2e9, budgets=["tier:free:month"]), "c1": hold}
    assert decode_holds(None) == decode_holds(b"") == {}


@pytest.mark.anyio
async def test_reservations_written_by_an_older_version_count_against_the_budget(stack, pricing_file):
    import time

    async with stack(COST_TOML.format(ms=0, pricing=pricing_file), names=["cost"]) as s:
        cost = s.actors[0]
        await s.client.rpc.service(COST_BUDGET_SET, m.BudgetSet(scope="user", name="alice", period="day", limit_usd=1.0),
                                   deadline=deadline_in(2000))
        # a reservations value as an earlier cost actor (array-like Hold) left it in KV
        await cost.kv.put("reservations", f'{{"old":[0.4,{time.time() + 600},["user:alice:day"]]}}'.encode())
        reply = await s.client.rpc.service(COST_BUDGETS, m.BudgetQuery(), deadline=deadline_in(2000))
        assert [b.reserved_usd for b in reply.budgets] == [pytest.approx(0.4)]
        granted = await s.client.rpc.service(COST_RESERVE, m.Reserve(call_id="new", ask_id="a", amount_usd=0.5,
                                             user="alice"), deadline=deadline_in(2000))
        assert isinstance(granted, m.Reserved), granted
        refused = await s.client.rpc.service(COST_RESERVE, m.Reserve(call_id="more", ask_id="b", amount_usd=0.2,
                                             user="alice"), deadline=deadline_in(2000))
        assert isinstance(refused, m.Failure) and refused.kind == m.BUDGET_EXCEEDED  # 0.4 + 0.5 + 0.2 > 1
        stored = await cost.kv.get("reservations")  # rewritten in the keyword form, the old hold kept
        assert b'"type":"Hold"' in stored.value and b'"old"' in stored.value


@pytest.mark.anyio
async def test_a_cost_actor_whose_ledger_view_lags_still_counts_a_call_another_one_settled(stack, pricing_file):
    """Two cost actors: B sees call c1 in the ledger, A's watch has not delivered it yet. B's next
    write must not make c1 vanish from A's view (neither spent nor held): A would grant past the
    limit (the overshoot once seen in the budget race under load)."""
    import time

    import msgspec

    async with stack(COST_TOML.format(ms=0, pricing=pricing_file), names=["cost"]) as s:
        a = s.actors[0]
        b = await s.add("cost")
        await a.budget_set(m.BudgetSet(scope="user", name="u", period="day", limit_usd=1.5e-3), None)
        await wait_until(lambda: "user:u:day" in b.limits, what="B sees the budget")
        held_back: list = []
        seen = a._changed
        a.ledger_mirror.on_change = lambda key, value: (held_back.append((key, value)) if key.startswith("ledger.")
                                                 else seen(key, value))  # A's ledger view lags
        def reserve(actor, call_id):
            return actor.reserve(m.Reserve(call_id=call_id, ask_id=call_id, amount_usd=1e-3, user="u",
                                           expires_at=time.time() + 60), None)

        await reserve(a, "c1")
        usage = msgspec.structs.replace(usage_event("c1", "c1", tokens=1000, user="u"), at=time.time())
        await s.client.nc.publish(s.client.subjects.usage("p"), codec.encode(usage))
        await wait_until(lambda: "c1" in b.totals.calls, what="B sees c1 in the ledger")
        await b.commit(m.Commit(call_id="c1", actual_usd=1e-3), None)  # B writes the reservations
        with pytest.raises(BudgetExceeded):  # spent 1e-3 (c1) + 1e-3 > 1.5e-3, whichever actor decides
            await reserve(a, "c2")
        with pytest.raises(BudgetExceeded):
            await reserve(b, "c3")


@pytest.mark.anyio
async def test_sharded_reservations_keep_a_user_budget_exact_and_a_tier_budget_under_its_limit(stack, pricing_file):
    toml = COST_TOML.format(ms=20, pricing=pricing_file).replace('[cost]\n', '[cost]\nshards = 4\n')
    async with stack(toml) as s:
        await s.add("cost")  # two cost actors share the shards
        router = s.actor("router")
        params = m.Params(max_tokens=10)
        worst = router.budgets.worst_case("p", m.Ask(id="x", messages=[m.Message(role="user", content="q00")],
                                                     params=params))
        for scope, name, limit in (("user", "dana", 10 * worst + worst / 2), ("tier", "free", 6 * worst + worst / 2)):
            await s.client.rpc.service(COST_BUDGET_SET, m.BudgetSet(scope=scope, name=name, period="day",
                                                                    limit_usd=limit), deadline=deadline_in(2000))
        await wait_until(lambda: {("user", "dana"), ("tier", "free")} <= router.budgets.scoped, what="seen")
        counts = {"dana": 0, "free": 0}

        async def one(i: int, who: str) -> None:
            try:
                await s.client.ask(f"q{i:02d}", params=params, budget_ms=10_000, cache="skip",
                                   **({"user": "dana"} if who == "dana" else {"user": f"u{i}", "tier": "free"}))
                counts[who] += 1
            except BudgetExceeded:
                pass

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i, "dana")
                tg.start_soon(one, i, "free")
        assert counts["dana"] == 10  # one user: one shard, the whole limit, exact
        assert 1 <= counts["free"] <= 6  # a tier over 4 shards: each holds a quarter of what is left
        cost = next(a for a in s.actors if a.kind == "cost")
        keys = {k for k in await cost.kv.keys() if k.startswith("reservations")}
        assert len(keys) >= 2 and keys <= {f"reservations.{k}" for k in range(4)}


@pytest.mark.anyio
async def test_ledger_compaction_rolls_a_day_into_daily_totals_and_refuses_late_events(stack, pricing_file):
    import time

    import msgspec

    toml = COST_TOML.format(ms=0, pricing=pricing_file).replace("[cost]\n", "[cost]\ncompact_after_days = 2\n")
    old_at = time.time() - 3 * 86400
    async with stack(toml, names=["cost"]) as s:
        cost = s.actors[0]
        subject = s.client.subjects.usage("p")
        events = [msgspec.structs.replace(usage_event(f"a{i}", "c", user=f"u{i % 3}"), at=old_at) for i in range(30)]
        events += [msgspec.structs.replace(usage_event(f"t{i}", "c", user="u0"), at=time.time()) for i in range(5)]
        for e in events:
            await s.client.nc.publish(subject, codec.encode(e))
        await wait_until(lambda: len(cost.totals.seen) == 35, what="all 35 calls in the ledger")
        before = await report(s, by="user")
        old_day = events[0].at and cost.price(events[0]).day
        assert await cost.compact_due() == [old_day]
        await wait_until(lambda: old_day in cost.totals.compacted, what="the daily key seen")
        info = await s.client.nc.jetstream().stream_info(f"KV_{s.client.subjects.bucket('cost')}")
        assert info.state.messages == 1 + 5  # the daily key and today's 5 entries
        assert await report(s, by="user") == before
        for e in events[:3]:  # late copies of compacted calls: refused, never counted twice
            await s.client.nc.publish(subject, codec.encode(e))
        await wait_until(lambda: cost.skipped.count >= 3, what="the late events refused")
        again = await s.add("cost")  # a restarted cost actor reads the daily totals back
        await wait_until(lambda: old_day in again.totals.compacted and len(again.totals.seen) == 5, what="loaded")
        assert (await report(s, by="user")) == before and again.totals.report("user", None) == before
        assert await cost.compact_due() == []


@pytest.mark.anyio
async def test_a_commit_from_an_older_router_without_user_finds_its_hold_in_any_shard(stack, pricing_file):
    import time

    toml = COST_TOML.format(ms=0, pricing=pricing_file).replace("[cost]\n", "[cost]\nshards = 8\n")
    async with stack(toml, names=["cost"]) as s:
        cost = s.actors[0]
        await cost.budget_set(m.BudgetSet(scope="user", name="erin", period="day", limit_usd=1.0), None)
        await cost.reserve(m.Reserve(call_id="c1", ask_id="a1", amount_usd=0.4, user="erin",
                                     expires_at=time.time() + 60), None)
        assert (await cost.budget_report(m.BudgetQuery(), None)).budgets[0].reserved_usd == pytest.approx(0.4)
        reply = await cost.commit(m.Commit(call_id="c1", actual_usd=0.0), None)  # no user, no tier: old router
        assert reply.budgets == ["user:erin:day"]
        assert (await cost.budget_report(m.BudgetQuery(), None)).budgets[0].reserved_usd == 0.0
