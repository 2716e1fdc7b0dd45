"""Circuit breakers: the pure state machine, and the health actor end to end on real NATS."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest

from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.subjects import HEALTH_RESET, HEALTH_STATUS
from bus.errors import NoHealthyProvider
from bus.server import NatsServer
from actors.pure import breaker as br
from actors.runtime import run_actors
from actors.stack import build_actors
from bus.client import Client
from tests.conftest import make_settings
from tests.helpers import wait_until

CFG = br.BreakerConfig(failures_to_open=3, cooldown_s=10.0, successes_to_close=2)


def fail(b, kind=m.TIMEOUT, *, at, retry_after=None):
    return br.record(b, ok=False, kind=kind, retry_after_s=retry_after, now=at, config=CFG)


def ok(b, *, at):
    return br.record(b, ok=True, kind=None, retry_after_s=None, now=at, config=CFG)


def test_opens_after_n_consecutive_counted_failures():
    b = br.reset("p", 0)
    b = fail(fail(b, at=1), at=2)
    assert b.state == br.CLOSED and b.consecutive_failures == 2
    b = fail(b, at=3)
    assert (b.state, b.open_until, b.reason) == (br.OPEN, 13.0, m.TIMEOUT)
    assert not br.allows(b, 12.9) and br.allows(b, 13.0)


def test_a_success_resets_the_count():
    b = ok(fail(fail(br.reset("p", 0), at=1), at=2), at=3)
    assert b.consecutive_failures == 0
    assert fail(b, at=4).state == br.CLOSED


@pytest.mark.parametrize("kind", [m.BAD_REQUEST, m.CONTEXT_LENGTH, m.CONTENT_FILTER, m.INVALID_OUTPUT, m.CANCELLED])
def test_kinds_that_do_not_count(kind):
    b = br.reset("p", 0)
    for t in range(10):
        b = fail(b, kind, at=t)
    assert b.state == br.CLOSED and b.consecutive_failures == 0


@pytest.mark.parametrize("kind", [m.TIMEOUT, m.RATE_LIMITED, m.OVERLOADED, m.UNAVAILABLE, m.INTERNAL])
def test_kinds_that_count(kind):
    b = br.reset("p", 0)
    for t in range(3):
        b = fail(b, kind, at=t)
    assert b.state == br.OPEN


def test_auth_opens_at_once():
    b = fail(br.reset("p", 0), m.AUTH, at=5)
    assert (b.state, b.reason, b.open_until) == (br.OPEN, m.AUTH, 15.0)


def test_half_open_after_cooldown_then_closes_after_m_successes():
    b = fail(fail(fail(br.reset("p", 0), at=0), at=0), at=0)
    live = br.effective(b, 10.0)
    assert live.state == br.HALF_OPEN and live.probe_round == b.probe_round + 1
    b = ok(b, at=10.5)
    assert b.state == br.HALF_OPEN and b.half_open_successes == 1
    b = ok(b, at=11)
    assert b.state == br.CLOSED and b.consecutive_failures == 0


def test_half_open_failure_reopens_for_a_new_cooldown():
    b = fail(fail(fail(br.reset("p", 0), at=0), at=0), at=0)
    b = ok(b, at=10)
    b = fail(b, m.OVERLOADED, at=11)
    assert (b.state, b.open_until, b.half_open_successes) == (br.OPEN, 21.0, 0)


def test_retry_after_opens_and_only_extends():
    b = fail(br.reset("p", 0), m.RATE_LIMITED, at=0, retry_after=30)
    assert (b.state, b.open_until) == (br.OPEN, 30.0)
    shorter = fail(b, m.RATE_LIMITED, at=1, retry_after=2)
    assert shorter.open_until == 30.0  # never shortened
    longer = fail(b, m.RATE_LIMITED, at=1, retry_after=100)
    assert longer.open_until == 101.0
    # a short Retry-After on a breaker that has reached N failures keeps the full cooldown
    c = fail(fail(br.reset("p", 0), at=0), at=0)
    c = fail(c, m.RATE_LIMITED, at=0, retry_after=1)
    assert c.state == br.OPEN and c.open_until == 10.0


def test_probe_rounds_advance_with_each_half_open_outcome():
    b = fail(fail(fail(br.reset("p", 0), at=0), at=0), at=0)
    r1 = br.effective(b, 10).probe_round
    b = ok(b, at=10)
    assert b.probe_round == r1 + 1


def test_breaker_state_round_trips_on_the_wire():
    b = fail(br.reset("p", 0), m.AUTH, at=5)
    assert msgspec.json.decode(codec.encode(b), type=m.BreakerState) == b


HEALTH_TOML = """
[router]
strategy = "failover"
providers = ["bad", "good"]

[health]
failures_to_open = 5
cooldown_s = {cooldown}
successes_to_close = 1

[providers.bad]
failures = {{ unavailable = 1.0 }}

[providers.good]
"""


async def health_report(s) -> dict[str, m.ProviderHealth]:
    reply = await s.client.rpc.service(HEALTH_STATUS, m.HealthQuery(detailed=True), deadline=deadline_in(2000),
    )
    assert isinstance(reply, m.HealthReport), reply
    return {p.breaker.provider: p for p in reply.providers}


@pytest.mark.anyio
async def test_five_failures_open_the_breaker_and_the_router_stops_calling(stack):
    async with stack(HEALTH_TOML.format(cooldown=60)) as s:
        bad = s.actor("provider.bad")
        calls = lambda: bad._endpoints[0].num_requests  # noqa: E731
        router = s.actor("router")
        for i in range(5):
            answer = await s.client.ask(f"q{i}", budget_ms=3000)
            assert [st.outcome for st in answer.route] == [m.UNAVAILABLE, "ok"]
        await wait_until(lambda: router.breakers.states.get("bad", m.BreakerState(provider="bad")).state == br.OPEN,
                         what="the router sees the open breaker")
        assert calls() == 5
        for i in range(5):
            answer = await s.client.ask(f"after{i}", budget_ms=3000)
            assert [(st.provider, st.outcome) for st in answer.route] == [("bad", "breaker_open"), ("good", "ok")]
        assert calls() == 5  # not called again
        report = await health_report(s)
        assert report["bad"].breaker.state == br.OPEN
        assert report["bad"].errors == {m.UNAVAILABLE: 5} and report["good"].successes == 10
        assert any("closed→open" in t for t in report["bad"].transitions)
        # with only the open provider left, the answer is immediate and says why
        with pytest.raises(NoHealthyProvider) as info:
            await s.client.ask("x", providers=["bad"], budget_ms=3000)
        assert "bad" in info.value.message and "retry in" in info.value.message
        # reset closes it, and the router sees that too
        await s.client.rpc.service(HEALTH_RESET, m.HealthReset(provider="bad"), deadline=deadline_in(2000))
        await wait_until(lambda: router.breakers.states["bad"].state == br.CLOSED, what="reset seen")


@pytest.mark.anyio
async def test_no_responders_seen_by_the_router_count_against_the_provider(stack):
    toml = HEALTH_TOML.format(cooldown=60).replace('failures = { unavailable = 1.0 }', '')
    async with stack(toml, names=["router", "health", "provider.good"]) as s:  # "bad" is not running
        for i in range(5):
            await s.client.ask(f"q{i}", budget_ms=3000)
        router = s.actor("router")
        await wait_until(lambda: "bad" in router.breakers.states and router.breakers.states["bad"].state == br.OPEN,
                         what="a provider nobody serves is opened from the router's reports")


@pytest.mark.anyio
async def test_one_probe_per_round_with_three_routers(stack, nats_url, root):
    cooldown = 0.5
    async with stack(HEALTH_TOML.format(cooldown=cooldown)) as s:
        more = [await s.add("router"), await s.add("router")]
        routers = [s.actor("router"), *more]
        bad = s.actor("provider.bad")
        for i in range(5):
            await s.client.ask(f"q{i}", budget_ms=3000)
        await wait_until(lambda: all(r.breakers.states.get("bad") and r.breakers.states["bad"].state == br.OPEN
                                     for r in routers), what="all three routers see it open")
        before = bad._endpoints[0].num_requests
        await anyio.sleep(cooldown + 0.1)  # the cooldown itself is what this test is about
        # many asks at once, spread over the three routers by the queue group
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(lambda i=i: s.client.ask(f"probe{i}", budget_ms=3000))
        assert bad._endpoints[0].num_requests - before == 1  # exactly one probe went out


@pytest.mark.anyio
async def test_state_survives_restarts_of_health_and_nats_server(tmp_path, root):
    settings = make_settings(HEALTH_TOML.format(cooldown=600), root)
    with NatsServer(store=tmp_path / "js") as server:
        port = server.port
        actors = build_actors(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, server.url)
            async with Client(server.url, root=root) as client:
                for i in range(5):
                    await client.ask(f"q{i}", budget_ms=3000)
            health = next(a for a in actors if a.kind == "health")
            await wait_until(lambda: health.breakers["bad"].state == br.OPEN, what="opened")
            for a in actors:
                a.stop()
    # a new server on the same store and port, new actors: the breaker is still open
    with NatsServer(store=tmp_path / "js", port=port) as server:
        actors = build_actors(settings)
        async with anyio.create_task_group() as tg:
            await tg.start(run_actors, actors, server.url)
            health = next(a for a in actors if a.kind == "health")
            router = next(a for a in actors if a.kind == "router")
            assert health.breakers["bad"].state == br.OPEN
            assert router.breakers.states["bad"].state == br.OPEN
            async with Client(server.url, root=root) as client:
                answer = await client.ask("after restart", budget_ms=3000)
            assert [(st.provider, st.outcome) for st in answer.route] == [("bad", "breaker_open"), ("good", "ok")]
            assert health.metrics["bad"].errors == {m.UNAVAILABLE: 5}
            for a in actors:
                a.stop()


@pytest.mark.anyio
async def test_outcomes_published_while_health_is_down_are_not_lost(stack):
    async with stack(HEALTH_TOML.format(cooldown=60), names=["router", "health", "provider.bad", "provider.good"]) as s:
        health = s.actor("health")
        health.stop()
        await wait_until(lambda: health.nc.is_closed, what="health stopped")
        for i in range(5):
            await s.client.ask(f"q{i}", budget_ms=3000)
        again = await s.add("health")
        await wait_until(lambda: again.breakers["bad"].state == br.OPEN, what="the durable consumer caught up")


@pytest.mark.anyio
async def test_breaker_view_propagation_is_fast(stack):
    async with stack(HEALTH_TOML.format(cooldown=60), names=["router", "health"]) as s:
        view = s.actor("router").breakers
        kv = view.kv
        started = time.monotonic()
        state = m.BreakerState(provider="x", state=br.OPEN, open_until=time.time() + 60)
        await kv.put("state.x", codec.encode(state))
        await wait_until(lambda: "x" in view.states, within_s=2.0, what="the watch delivers the change")
        assert time.monotonic() - started < 1.0
