"""Alerts: each rule fires and resolves on a driven scenario (injected clock), the webhook against
a local HTTP receiver, and a driven alert end to end: health actor → events stream → ``llmbus alerts``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.subjects import PROVIDER_COMPLETE
from actors.fakes.server import Reply, WireServer, json_reply
from actors.health.alerts import Webhook
from actors.pure.alerts import BREAKER_OPEN, BUDGET, ERROR_RATE, FALLBACK, QUALITY, Alerts
from actors.settings import AlertSettings
from tests.helpers import cli_env, wait_until

RULES = AlertSettings(breaker_open_minutes=5, error_rate_percent=25, error_window_s=300, error_min_calls=10,
                      fallback_percent=20, fallback_min_asks=10, budget_percent=80, quality_first_pass_percent=60,
                      quality_min_reviews=10)


class Clock:
    def __init__(self, t: float = 1_764_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fired(changes):
    return [(a.rule, a.subject, a.resolved) for a in changes]


def test_breaker_open_fires_after_n_minutes_once_and_resolves():
    clock = Clock()
    a = Alerts(RULES, clock=clock)
    a.breaker("p", "open", clock.t)
    assert a.evaluate() == []
    clock.t += 4 * 60
    a.breaker("p", "half_open", clock.t)  # still not closed: the same episode
    assert a.evaluate() == []
    clock.t += 2 * 60
    (alert,) = a.evaluate()
    assert (alert.rule, alert.subject, alert.severity, alert.resolved) == (BREAKER_OPEN, "p", "critical", False)
    assert alert.value == pytest.approx(6.0) and alert.since == clock.t - 360
    clock.t += 60
    assert a.evaluate() == []  # deduplicated while it lasts
    a.breaker("p", "closed", clock.t)
    assert fired(a.evaluate()) == [(BREAKER_OPEN, "p", True)]


def test_error_rate_over_a_window_with_a_minimum_of_calls():
    clock = Clock()
    a = Alerts(RULES, clock=clock)
    for i in range(9):
        a.call("p", ok=i % 2 == 0)
    assert a.evaluate() == []  # 9 calls: under the minimum
    a.call("p", ok=False)
    (alert,) = a.evaluate()
    assert (alert.rule, alert.value) == (ERROR_RATE, 50.0) and "5 of 10" in alert.message
    clock.t += 301  # the window slides past them
    for _ in range(10):
        a.call("p", ok=True)
    assert fired(a.evaluate()) == [(ERROR_RATE, "p", True)]


def test_fallback_route_share_in_the_window():
    clock = Clock()
    a = Alerts(RULES, clock=clock)
    a.route_totals("pro", "primary", {"primary": 0})
    clock.t += 10
    a.route_totals("pro", "primary", {"primary": 9, "backup": 1})
    assert a.evaluate() == []  # 10 %
    clock.t += 10
    a.route_totals("pro", "primary", {"primary": 12, "backup": 8})
    (alert,) = a.evaluate()
    assert (alert.rule, alert.subject, alert.value) == (FALLBACK, "pro", 40.0)
    clock.t += 400  # the old snapshots leave the window: only what came since counts
    a.route_totals("pro", "primary", {"primary": 40, "backup": 9})
    assert fired(a.evaluate()) == [(FALLBACK, "pro", True)]


def test_budget_spend_share_of_the_limit():
    clock = Clock()
    a = Alerts(RULES, clock=clock)
    a.budget("user:alice:day", 0.5, 1.0)
    assert a.evaluate() == []
    a.budget("user:alice:day", 0.85, 1.0)
    (alert,) = a.evaluate()
    assert (alert.rule, alert.severity, alert.value) == (BUDGET, "warning", 85.0)
    a.budget("user:alice:day", 0.0, 1.0)  # a new day
    assert fired(a.evaluate()) == [(BUDGET, "user:alice:day", True)]


def test_quality_first_pass_rate_under_the_threshold():
    clock = Clock()
    a = Alerts(RULES, clock=clock)
    a.review_totals(0, 0)
    clock.t += 5
    a.review_totals(10, 5)
    (alert,) = a.evaluate()
    assert (alert.rule, alert.subject, alert.value) == (QUALITY, "supervisor", 50.0)
    clock.t += 400
    a.review_totals(30, 25)  # the window now holds 20 reviews, 20 passes
    assert fired(a.evaluate()) == [(QUALITY, "supervisor", True)]


@pytest.mark.anyio
async def test_webhook_retries_server_errors_and_timeouts_then_delivers():
    alert = m.Alert(rule=ERROR_RATE, subject="p", value=50.0, threshold=25.0, since=1.0, at=2.0)
    async with WireServer() as receiver:
        receiver.push(json_reply(503, {"error": "busy"}), Reply(stall=True), json_reply(200, {"ok": True}))
        hook = Webhook(receiver.url + "/hook", timeout_s=0.5, retries=3)
        with anyio.fail_after(10):
            assert await hook.send(alert)
        assert len(receiver.requests) == 3 and hook.sent == 1
        body = json.loads(receiver.requests[-1].body)
        assert body["type"] == "Alert" and body["rule"] == ERROR_RATE and body["subject"] == "p"
        assert receiver.requests[-1].path == "/hook"

        receiver.push(json_reply(400, {"error": "no"}))  # a client error is not retried
        assert not await hook.send(alert) and hook.failed == 1 and len(receiver.requests) == 4


ALERTS_TOML = """
[router]
strategy = "single"
providers = ["flaky"]

[providers.flaky]
failures = { unavailable = 1.0 }

[health]
failures_to_open = 3
cooldown_s = 3600

[alerts]
eval_s = 3600
error_min_calls = 3
error_window_s = 3600
breaker_open_minutes = 5
webhook_url = "{hook}"
webhook_retries = 0
"""


@pytest.mark.anyio
async def test_a_driven_alert_reaches_the_events_stream_the_webhook_and_llmbus_alerts(stack, tmp_path: Path):
    async with WireServer(default=lambda req: json_reply(200, {})) as receiver:
        toml = ALERTS_TOML.replace("{hook}", receiver.url + "/alerts")
        async with stack(toml, names=["health", "provider.flaky"]) as s:
            health = s.actor("health")
            clock = Clock()
            health.clock = clock
            health.alerts.alerts.clock = clock
            for i in range(3):
                reply = await s.client.rpc.service(
                    PROVIDER_COMPLETE, m.Complete(id=f"c{i}", ask_id=f"a{i}", messages=[m.Message(role="user", content="hi")]),
                    deadline=deadline_in(5000), name="flaky")
                assert isinstance(reply, m.Failure)
            await wait_until(lambda: health.breakers["flaky"].state == "open", what="the breaker opened")
            assert fired(await health.alerts.tick()) == [(ERROR_RATE, "flaky", False)]
            clock.t += 6 * 60
            assert fired(await health.alerts.tick()) == [(BREAKER_OPEN, "flaky", False)]
            assert await health.alerts.tick() == []  # no repeat while it lasts
            await wait_until(lambda: len(receiver.requests) == 2, what="the webhook got both")

            config = tmp_path / "llmbus.toml"
            config.write_text(toml)
            env = cli_env(LLMBUS_ROOT=s.root, LLMBUS_CONFIG=str(config))
            done = await anyio.to_thread.run_sync(lambda: _llmbus("--nats-url", s.url, "alerts", "--active", "--json", env=env))
            assert done.returncode == 0, done.stderr
            shown = json.loads(done.stdout)["alerts"]
            assert {(a["rule"], a["subject"]) for a in shown} == {(ERROR_RATE, "flaky"), (BREAKER_OPEN, "flaky")}

            clock.t += 3601  # the failures leave the error window; a reset closes the breaker
            await health.reset(m.HealthReset(provider="flaky"), None)
            assert sorted(fired(await health.alerts.tick())) == [(BREAKER_OPEN, "flaky", True), (ERROR_RATE, "flaky", True)]
            from actors.cli.alerts import group_failures, read_alerts, read_failures  # what the CLI prints

            assert all(a.resolved for a in await read_alerts(s.client.nc, s.client.subjects))
            failures = await read_failures(s.client.nc, s.client.subjects)
            assert group_failures(failures, "provider") == {"flaky": 3}


def _llmbus(*args: str, env: dict[str, str]):
    import subprocess

    from tests.helpers import LLMBUS

    return subprocess.run([str(LLMBUS), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.anyio
async def test_budget_spend_fires_from_the_cost_actors_budgets(stack, tmp_path: Path):
    from bus.subjects import COST_BUDGET_SET

    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[mock."m-1"]\ninput = 1.0\noutput = 2.0\ntaken = "2026-11-25"\nsource = "test"\n')
    toml = f'[providers.p]\nmodel = "m-1"\n[cost]\npricing = "{pricing}"\n[alerts]\neval_s = 3600\n'
    async with stack(toml, names=["health", "cost"]) as s:
        health, cost = s.actor("health"), s.actor("cost")
        reply = await s.client.rpc.service(COST_BUDGET_SET, m.BudgetSet(scope="user", name="ann", period="month",
                                                                        limit_usd=1.2), deadline=deadline_in(5000))
        assert isinstance(reply, m.BudgetReport)
        assert await health.alerts.tick() == []
        usage = m.Usage(ask_id="a1", call_id="c1", provider="p", model="m-1", usage=m.TokenUsage(input_tokens=1_000_000),
                        user="ann", at=time.time())
        await s.client.nc.publish(s.client.subjects.usage("p"), codec.encode(usage))
        await wait_until(lambda: cost.totals.calls, what="the usage in the ledger")
        (alert,) = await health.alerts.tick()
        assert (alert.rule, alert.subject, alert.value) == (BUDGET, "user:ann:month", pytest.approx(83.33))


@pytest.mark.anyio
async def test_failures_have_their_ask_id_and_route_from_the_recording(stack):
    from actors.cli.alerts import group_failures, read_failures

    toml = ('[router]\nstrategy = "failover"\nproviders = ["flaky", "broken"]\n'
            '[providers.flaky]\nfailures = { unavailable = 1.0 }\n[providers.broken]\nfailures = { overloaded = 1.0 }\n'
            '[record]\nsampling = "all"\n')
    async with stack(toml, names=["router", "provider.flaky", "provider.broken"]) as s:
        with pytest.raises(Exception):
            await s.client.ask("hello", ask_id="ask-that-fails", cache="skip", budget_ms=5000)
        lines: list = []

        async def look() -> bool:
            lines[:] = await read_failures(s.client.nc, s.client.subjects)
            return any(x.ask_id == "ask-that-fails" and x.route == "flaky>broken" for x in lines)

        with anyio.fail_after(10):
            while not await look():
                await anyio.sleep(0.05)
        mine = [x for x in lines if x.ask_id == "ask-that-fails"]
        assert {x.source for x in mine} == {"recording"} and any(x.kind == m.ALL_FAILED for x in mine), mine
        by_kind = group_failures(lines, "kind")
        assert by_kind.get("unavailable", 0) >= 1 and by_kind.get("overloaded", 0) >= 1


@pytest.mark.anyio
async def test_quality_and_fallback_rules_fire_from_the_supervisor_and_the_router(stack):
    from bus.subjects import SUPERVISOR_REVIEW

    toml = """
[router]
strategy = "single"
providers = ["down", "up"]
[providers.down]
failures = { unavailable = 1.0 }
[providers.up]
[health]
enabled = false
[supervisor]
provider = "mock"
[tiers.t]
fallback_routes = true
[[tiers.t.routes]]
name = "primary"
strategy = "single"
providers = ["down"]
[[tiers.t.routes]]
name = "backup"
strategy = "single"
providers = ["up"]
[alerts]
eval_s = 3600
fallback_min_asks = 3
quality_min_reviews = 3
"""
    schema = {"type": "object", "properties": {"day1": {"type": "string"}}}
    async with stack(toml, names=["router", "health", "supervisor", "provider.down", "provider.up"]) as s:
        watch = s.actor("health").alerts
        assert await watch.tick() == []  # the baseline: nothing counted yet
        for i in range(3):
            answer = await s.client.ask(f"q{i}", tier="t", cache="skip", budget_ms=5000)
            assert answer.metadata["route_name"] == "backup"
            review = m.Review(ask_id=f"r{i}", messages=[], schema=schema, candidates=[
                m.Candidate(provider="a", data={"day1": "x"}), m.Candidate(provider="b", data={"day1": "y"})])
            verdict = await s.client.rpc.service(SUPERVISOR_REVIEW, review, deadline=deadline_in(5000))
            assert isinstance(verdict, m.Verdict) and verdict.issues
        got = {(a.rule, a.subject): a for a in await watch.tick()}
        assert got[(FALLBACK, "t")].value == 100.0
        assert got[(QUALITY, "supervisor")].value == 0.0
