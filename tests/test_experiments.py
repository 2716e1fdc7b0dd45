"""Experiments (issue 14): rollout by a stable hash of the user id, changed live through KV; A/B
arms in the answer and the usage ledger; shadow runs that never change or slow the answer.

Pure parts as tables, then end to end on real NATS with mock providers."""

from __future__ import annotations

import json

import anyio
import pytest

from actors.cli.routing import _gather
from actors.pure.experiment import agreement, share, summarize
from bus import codec
from bus import messages as m
from bus.deadline import deadline_in, now
from bus.subjects import CONTROL_EXPERIMENT
from tests.helpers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

USERS = [f"user-{i}" for i in range(40)]


def test_share_is_stable_spread_and_apart_per_experiment():
    assert share("roll", "alice") == share("roll", "alice")
    points = [share("roll", u) for u in (f"u{i}" for i in range(4000))]
    assert all(0.0 <= p < 100.0 for p in points)
    assert 0.22 < sum(p < 25 for p in points) / len(points) < 0.28  # 25 % of users, give or take
    assert share("roll", "alice") != share("other", "alice")


def test_agreement_same_data_or_text_similarity_none_when_a_side_failed():
    assert agreement("x", {"a": 1, "b": 2}, "y", {"b": 2, "a": 1}) == 1.0
    assert agreement("x", {"a": 1}, "x", {"a": 2}) == 0.0
    assert agreement("[a] Lisbon in five days", None, "[b] Lisbon in five days", None) > 0.8
    assert agreement("sunny and warm", None, "a long list of museums", None) < 0.5
    assert agreement("same words", None, "same words", {"parsed": True}) == 1.0  # one side structured: the texts
    assert agreement(None, None, "x", None) is None


def test_summarize_per_arm():
    ev = [m.ExperimentEvent(experiment="e", arm="control", ask_id=str(i), strategy="single", latency_ms=float(i),
                            cost_usd=0.01) for i in range(1, 101)]
    ev += [m.ExperimentEvent(experiment="e", arm="shadow", ask_id="s", strategy="hedged", ok=False, kind="timeout"),
           m.ExperimentEvent(experiment="e", arm="shadow", ask_id="t", strategy="hedged", latency_ms=5.0,
                             agreement=0.5, cost_usd=None)]
    control, shadow = summarize(ev)
    assert control["asks"] == 100 and control["success_rate"] == 1.0 and control["p50_ms"] == 51.0
    assert control["p95_ms"] == 96.0 and control["cost_usd"] == pytest.approx(1.0)
    assert shadow["success_rate"] == 0.5 and shadow["agreement"] == 0.5 and shadow["cost_usd"] is None


ROLLOUT = """
[router]
strategy = "single"
providers = ["a", "b"]
[providers.a]
latency = { dist = "fixed", ms = 2 }
[providers.b]
latency = { dist = "fixed", ms = 2 }
[experiments.roll]
strategy = "single"
providers = ["b"]
percent = 25
"""


async def _usage_tags(s, into: dict[str, str]):
    decode = codec.decoder(m.UsageEvent).decode

    async def got(msg):
        event = decode(msg.data)
        for u in event.items if isinstance(event, m.Usages) else [event]:
            into[u.ask_id] = u.experiment

    return await s.client.nc.subscribe(f"{s.root}.events.usage.>", cb=got)


async def test_rollout_is_stable_per_user_changes_live_and_is_recorded_in_answer_and_ledger(stack):
    async with stack(ROLLOUT) as s:
        tags: dict[str, str] = {}
        sub = await _usage_tags(s, tags)

        async def arms() -> dict[str, str]:
            seen = {}
            for user in USERS:
                a = await s.client.ask("go", user=user, cache="skip", budget_ms=2000)
                arm = a.metadata["experiment"]["arm"]
                assert a.providers == (["b"] if arm == "variant" else ["a"])
                assert a.metadata["experiment"]["name"] == "roll"
                seen[user] = arm
                await wait_until(lambda: a.id in tags, what="the call's usage event")
                assert tags[a.id] == f"roll/{arm}"
            return seen

        first = await arms()
        assert {u for u, arm in first.items() if arm == "variant"} == {u for u in USERS if share("roll", u) < 25}
        assert await arms() == first  # stable per user
        own = await s.client.ask("go", user=USERS[0], strategy="single", cache="skip", budget_ms=2000)
        assert "experiment" not in own.metadata  # an ask that names its strategy is left alone
        # live: 75 % through the control bucket; nobody in at 25 % is out at 75 %
        report = await s.client.rpc.service(CONTROL_EXPERIMENT, m.ExperimentSet(name="roll", percent=75),
                                            deadline=deadline_in(2000))
        assert [(e.name, e.percent, e.configured) for e in report.experiments] == [("roll", 75.0, 25.0)]
        later = await arms()
        assert {u for u, arm in later.items() if arm == "variant"} == {u for u in USERS if share("roll", u) < 75}
        assert all(later[u] == "variant" for u, arm in first.items() if arm == "variant")
        bad = await s.client.rpc.service(CONTROL_EXPERIMENT, m.ExperimentSet(name="nope", percent=5),
                                         deadline=deadline_in(2000))
        assert isinstance(bad, m.Failure) and bad.kind == m.BAD_REQUEST
        await sub.unsubscribe()
        # llmbus experiments' data: the events the router kept in the events stream
        with anyio.fail_after(5):  # the stream stores what the router published a moment later
            while True:
                live, rows = await _gather(s.client)
                by_arm = {r["arm"]: r for r in rows}
                if sum(r["asks"] for r in rows) == 3 * len(USERS):
                    break
                await anyio.sleep(0.02)
        assert by_arm["control"]["asks"] + by_arm["variant"]["asks"] == 3 * len(USERS)
        assert by_arm["variant"]["success_rate"] == 1.0 and by_arm["variant"]["p95_ms"] is not None
        assert live.experiments[0].percent == 75.0


SHADOW = """
[router]
strategy = "single"
providers = ["a", "twin", "slow", "bad"]
[providers.a]
latency = { dist = "fixed", ms = 2 }
[providers.twin]
latency = { dist = "fixed", ms = 2 }
[providers.slow]
latency = { dist = "fixed", ms = 3000 }
[providers.bad]
failures = { unavailable = 1.0 }
[experiments.same]
strategy = "single"
providers = ["twin"]
shadow = true
percent = 100
tiers = ["t-same"]
[experiments.stall]
strategy = "single"
providers = ["slow"]
shadow = true
percent = 100
shadow_budget_ms = 300
tiers = ["t-stall"]
[experiments.fails]
strategy = "single"
providers = ["bad"]
shadow = true
percent = 100
tiers = ["t-fails"]
"""


async def test_shadow_never_changes_the_answer_and_a_failing_or_stalling_shadow_does_not_slow_it(stack):
    async with stack(SHADOW) as s:
        events: list[m.ExperimentEvent] = []
        decode = codec.decoder(m.ExperimentEvent).decode

        async def got(msg):
            events.append(decode(msg.data))

        sub = await s.client.nc.subscribe(f"{s.root}.events.shadow.>", cb=got)
        tags: dict[str, str] = {}
        usage = await _usage_tags(s, tags)
        await s.client.nc.flush()
        for tier in ("t-same", "t-stall", "t-fails"):
            started = now()
            answer = await s.client.ask("plan 3 days in Porto", tier=tier, user="u1", cache="skip", budget_ms=2000)
            took = now() - started
            assert answer.providers == ["a"] and answer.text.startswith("[a] ")  # the control's, always
            assert answer.metadata["experiment"]["arm"] == "control" and answer.metadata["experiment"]["shadow"]
            assert took < 0.25, f"{tier}: the real ask took {took:.3f}s"  # the shadow is off the reply path
        await wait_until(lambda: len(events) == 3, within_s=5, what="three shadow events")
        got_by = {e.experiment: e for e in events}
        assert got_by["same"].ok and got_by["same"].agreement > 0.8 and got_by["same"].strategy == "single"
        assert not got_by["stall"].ok and got_by["stall"].kind == m.TIMEOUT and got_by["stall"].latency_ms < 1000
        assert not got_by["fails"].ok and got_by["fails"].agreement is None
        # the shadow's call is tagged apart in the ledger; the user's budget is not charged with it
        await wait_until(lambda: "same/shadow" in tags.values(), what="the shadow's usage event")
        assert sorted(set(tags.values())) == ["fails/control", "same/control", "same/shadow", "stall/control"]
        await sub.unsubscribe()
        await usage.unsubscribe()
        router = s.actor("router")
        await wait_until(lambda: not router.experiments.shadows, what="the shadow tasks ended")


ROUTES = """
[router]
strategy = "single"
providers = ["a", "down"]
[providers.a]
latency = { dist = "fixed", ms = 2 }
[providers.down]
failures = { unavailable = 1.0 }
[tiers.premium]
fallback_routes = true
[[tiers.premium.routes]]
name = "primary"
strategy = "single"
providers = ["down"]
[[tiers.premium.routes]]
name = "a-route"
strategy = "single"
providers = ["a"]
"""


async def test_route_counts_are_reported_and_the_client_takes_a_preset(stack):
    async with stack(ROUTES) as s:
        for _ in range(3):
            answer = await s.client.ask("go", tier="premium", cache="skip", budget_ms=2000)
            assert answer.metadata["route_name"] == "a-route"
        report = await s.client.rpc.service(CONTROL_EXPERIMENT, m.ExperimentQuery(), deadline=deadline_in(2000))
        assert report.routes == {"premium/a-route": 3} and report.experiments == []
        assert report.router == s.actor("router").id
        # preset= on the client is labels["preset"]: the shipped "cheap" preset is a cascade
        answer = await s.client.ask("go", preset="cheap", cache="skip", budget_ms=2000)
        assert answer.strategy == "cascade" and "cascade" in answer.metadata
        assert s.client.build("x", preset="fast", labels={"k": "v"}).labels == {"k": "v", "preset": "fast"}
        with pytest.raises(Exception, match="unknown preset"):
            await s.client.ask("go", preset="nope", budget_ms=2000)


async def test_llmbus_experiments_and_set_through_the_binary(stack, tmp_path):
    from tests.helpers import LLMBUS, cli_env

    async with stack(ROLLOUT) as s:
        config = tmp_path / "llmbus.toml"
        config.write_text(ROLLOUT + f'\n[bus]\nroot = "{s.root}"\n')
        for user in USERS[:10]:
            await s.client.ask("go", user=user, cache="skip", budget_ms=2000)

        async def cli(*args: str):
            done = await anyio.run_process([str(LLMBUS), "--config", str(config), "--nats-url", s.url, *args],
                                           check=False, env=cli_env())
            return done.returncode, done.stdout.decode(), done.stderr.decode()

        code, out, err = await cli("experiments", "set", "roll", "--percent", "60")
        assert code == 0 and out.strip() == "roll: 60 % (config: 25 %)", err
        assert s.actor("router").experiments.percent["roll"] == 60.0
        with anyio.fail_after(10):  # the events reach the stream a moment after the answers
            while True:
                code, out, err = await cli("experiments", "--json")
                assert code == 0, err
                report = json.loads(out)
                if sum(r["asks"] for r in report["arms"]) == 10:
                    break
        assert report["experiments"][0]["percent"] == 60.0
        assert {r["arm"] for r in report["arms"]} <= {"control", "variant"}
        code, out, err = await cli("experiments")
        assert code == 0 and "roll: rollout of single for 60 % of users (config: 25 %)" in out
        code, _, err = await cli("experiments", "set", "nope", "--percent", "5")
        assert code == 2 and "unknown experiment 'nope'" in err
