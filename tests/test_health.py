"""Circuit breakers: the pure state machine, and the health actor end to end on real NATS.

Cooldowns are driven by a test clock given to the health actor (``clock=``) and
``HealthActor.end_cooldowns()``, never slept out."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest

from bus import codec
from bus import messages as m
from bus.deadline import deadline_in
from bus.subjects import HEALTH_RESET, HEALTH_STATUS
from bus.errors import AuthError, NoHealthyProvider
from bus.rpc import new_id
from bus.server import NatsServer
from bus.subjects import Subjects
from actors.health.actor import HealthActor
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


def test_every_kind_has_a_verdict_and_an_unknown_kind_counts():
    assert set(br.COUNTED) == m.FAILURE_KINDS
    assert br.MISCONFIGURES == {m.AUTH} and not br.COUNTED[m.AUTH]
    b = br.reset("p", 0)
    for t in range(3):
        b = fail(b, "from_a_newer_peer", at=t)
    assert (b.state, b.reason) == (br.OPEN, "from_a_newer_peer")


def opened(at=0.0):
    return fail(fail(fail(br.reset("p", 0), at=at), at=at), at=at)


def half_open():
    return br.effective(opened(), 10.0)


def two_failures():
    return fail(fail(br.reset("p", 0), at=0), at=0)


# (name, start, outcomes: ("fail", kind, at, retry_after) | ("ok", at) | ("reset", at), expected state, failures)
MISCONFIGURED_TABLE = [
    ("closed, auth", lambda: br.reset("p", 0), [("fail", m.AUTH, 5, None)], br.MISCONFIGURED, 0),
    ("auth does not count", two_failures, [("fail", m.AUTH, 5, None)], br.MISCONFIGURED, 2),
    ("open, auth", opened, [("fail", m.AUTH, 5, None)], br.MISCONFIGURED, 3),
    ("half-open probe, auth", half_open, [("fail", m.AUTH, 10, None)], br.MISCONFIGURED, 3),
    ("no cooldown ever ends it", lambda: br.reset("p", 0), [("fail", m.AUTH, 5, None), ("fail", m.AUTH, 1e9, None)],
     br.MISCONFIGURED, 0),
    ("transient failures change nothing", lambda: br.reset("p", 0),
     [("fail", m.AUTH, 0, None), *[("fail", m.TIMEOUT, t, None) for t in range(10)],
      ("fail", m.RATE_LIMITED, 11, 30.0), ("fail", m.UNAVAILABLE, 1e6, None)], br.MISCONFIGURED, 0),
    ("a success closes it", lambda: br.reset("p", 0), [("fail", m.AUTH, 0, None), ("ok", 1e6)], br.CLOSED, 0),
    ("so does a reset", lambda: br.reset("p", 0), [("fail", m.AUTH, 0, None), ("reset", 7)], br.CLOSED, 0),
    ("closed again, counts from zero", lambda: br.reset("p", 0),
     [("fail", m.AUTH, 0, None), ("ok", 1), ("fail", m.TIMEOUT, 2, None)], br.CLOSED, 1),
]


@pytest.mark.parametrize(("start", "outcomes", "state", "failures"),
                         [row[1:] for row in MISCONFIGURED_TABLE], ids=[row[0] for row in MISCONFIGURED_TABLE])
def test_misconfigured(start, outcomes, state, failures):
    b = start()
    for event in outcomes:
        if event[0] == "fail":
            _, kind, at, retry_after = event
            b = br.record(b, ok=False, kind=kind, retry_after_s=retry_after, now=at, config=CFG,
                          detail=f"said at {at}")
        elif event[0] == "ok":
            b = ok(b, at=event[1])
        else:
            b = br.reset("p", event[1])
    assert (b.state, b.consecutive_failures) == (state, failures)
    if state == br.MISCONFIGURED:
        assert (b.reason, b.open_until, b.half_open_successes) == (m.AUTH, 0.0, 0)
        assert b.detail.startswith("said at")
        assert br.effective(b, 1e12) == b and not br.allows(b, 1e12)  # never half-open, never called
    else:
        assert br.allows(b, 1e12)


def test_misconfigured_keeps_the_latest_auth_detail_and_starts_a_new_probe_round():
    start = half_open()
    b = br.record(start, ok=False, kind=m.AUTH, retry_after_s=None, now=10, config=CFG, detail="401 bad key")
    assert b.probe_round == start.probe_round + 1 and b.detail == "401 bad key" and b.changed_at == 10
    again = br.record(b, ok=False, kind=m.AUTH, retry_after_s=None, now=11, config=CFG, detail="403 blocked")
    assert again.detail == "403 blocked" and again.changed_at == 10
    assert br.record(again, ok=False, kind=m.TIMEOUT, retry_after_s=None, now=12, config=CFG, detail="slow") == again


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
    b = br.record(br.reset("p", 0), ok=False, kind=m.AUTH, retry_after_s=None, now=5, config=CFG, detail="401")
    assert msgspec.json.decode(codec.encode(b), type=m.BreakerState) == b


def test_metrics_stored_before_provider_health_was_tagged_still_decode():
    old = b'{"breaker":{"type":"BreakerState","provider":"p","state":"open"},"calls":3,"errors":{"timeout":3}}'
    restored = msgspec.json.decode(old, type=m.ProviderHealth)
    assert (restored.breaker.state, restored.calls, restored.errors) == (br.OPEN, 3, {m.TIMEOUT: 3})
    assert b'"type":"ProviderHealth"' in codec.encode(restored)


class Clock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


async def add_health(s, clock: Clock) -> HealthActor:
    """Start a health actor on the stack's settings with ``clock`` (the stack runs without one)."""
    h = s.settings.health
    config = br.BreakerConfig(failures_to_open=h.failures_to_open, cooldown_s=h.cooldown_s,
                              successes_to_close=h.successes_to_close)
    actor = HealthActor(config=config, providers=list(s.settings.providers), clock=clock, subjects=Subjects(s.root))
    await s.tg.start(actor.run, s.url)
    s.extra.append(actor)
    return actor


def calls(actor) -> int:
    return actor.statistics().endpoints["complete"].num_requests


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
        router = s.actor("router")
        for i in range(5):
            answer = await s.client.ask(f"q{i}", budget_ms=3000)
            assert [st.outcome for st in answer.route] == [m.UNAVAILABLE, "ok"]
        await wait_until(lambda: router.breakers.states.get("bad", m.BreakerState(provider="bad")).state == br.OPEN,
                         what="the router sees the open breaker")
        assert calls(bad) == 5
        for i in range(5):
            answer = await s.client.ask(f"after{i}", budget_ms=3000)
            assert [(st.provider, st.outcome) for st in answer.route] == [("bad", "breaker_open"), ("good", "ok")]
        assert calls(bad) == 5  # not called again
        with anyio.fail_after(3):  # providers send their outcomes in batches, a few ms after the replies
            while (report := await health_report(s))["good"].successes < 10:
                await anyio.sleep(0.005)
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


def seen_by(routers, state: str):
    return lambda: all(r.breakers.states.get("bad") and r.breakers.states["bad"].state == state for r in routers)


@pytest.mark.anyio
async def test_one_probe_per_round_with_three_routers(stack):
    clock = Clock()
    async with stack(HEALTH_TOML.format(cooldown=60), names=["router", "provider.bad", "provider.good"]) as s:
        health = await add_health(s, clock)
        more = [await s.add("router"), await s.add("router")]
        routers = [s.actor("router"), *more]
        bad = s.actor("provider.bad")
        for i in range(5):
            await s.client.ask(f"q{i}", budget_ms=3000)
        await wait_until(seen_by(routers, br.OPEN), what="all three routers see it open")
        before = calls(bad)
        clock.t += 59.9
        await health.end_cooldowns()
        assert health.breakers["bad"].state == br.OPEN  # not yet
        clock.t += 0.1  # the cooldown is over
        await health.end_cooldowns()
        await wait_until(seen_by(routers, br.HALF_OPEN), what="all three routers see it half-open")
        # many asks at once, spread over the three routers by the queue group
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(lambda i=i: s.client.ask(f"probe{i}", budget_ms=3000))
        assert calls(bad) - before == 1  # exactly one probe went out
        # it failed: open again, for a new cooldown from the (test) clock's now
        await wait_until(lambda: health.breakers["bad"].state == br.OPEN, what="the failed probe reopened it")
        assert health.breakers["bad"].open_until == clock.t + 60


AUTH_TOML = """
[router]
strategy = "failover"
providers = ["bad", "good"]

[health]
failures_to_open = 5
cooldown_s = 60
successes_to_close = 1

[providers.bad]
failures = { auth = 1.0 }

[providers.good]
"""


async def direct_call(s, provider: str, *, fault: str) -> m.Completion | m.Failure:
    """A call straight to the provider, past every router, as ``llmbus test NAME`` makes it
    (the mock's fault label overrides its configured failures: "none" succeeds)."""
    request = m.Complete(id=new_id(), ask_id=new_id(), messages=[m.Message(role="user", content="ping")],
                         labels={"mock.fault": fault})
    return await s.client.rpc.call(s.client.subjects.provider_complete(provider), request, codec.complete_reply,
                                   deadline=deadline_in(3000), ask_id=request.ask_id, call_id=request.id)


@pytest.mark.anyio
async def test_an_auth_failure_makes_the_provider_misconfigured_until_a_success_or_a_reset(stack):
    clock = Clock()
    async with stack(AUTH_TOML, names=["router", "provider.bad", "provider.good"]) as s:
        health = await add_health(s, clock)
        router, bad = s.actor("router"), s.actor("provider.bad")
        with pytest.raises(AuthError):  # failover does not move on for auth (its default `on`)
            await s.client.ask("q0", budget_ms=3000)
        await wait_until(seen_by([router], br.MISCONFIGURED), what="the router sees it misconfigured")
        for i in range(3):
            answer = await s.client.ask(f"q{i + 1}", budget_ms=3000)
            assert [(st.provider, st.outcome) for st in answer.route] == [("bad", "breaker_misconfigured"), ("good", "ok")]
            assert "misconfigured (auth: mock bad failed as configured)" in answer.route[0].detail
            assert "llmbus health reset bad" in answer.route[0].detail
        with pytest.raises(NoHealthyProvider) as info:
            await s.client.ask("only bad", providers=["bad"], budget_ms=3000)
        assert "misconfigured" in info.value.message
        # no cooldown ends it: no half-open, no probe, however long
        clock.t += 100 * 60
        await health.end_cooldowns()
        answer = await s.client.ask("much later", budget_ms=3000)
        assert answer.route[0].outcome == "breaker_misconfigured"
        assert calls(bad) == 1
        report = (await health_report(s))["bad"]
        assert (report.breaker.state, report.breaker.reason) == (br.MISCONFIGURED, m.AUTH)
        assert report.breaker.detail == "mock bad failed as configured"
        assert report.breaker.consecutive_failures == 0  # not a transient failure
        assert report.errors == {m.AUTH: 1}
        assert any("closed→misconfigured (auth)" in t for t in report.transitions)
        # the key was fixed: `llmbus test bad` calls it directly, its success closes the breaker
        assert isinstance(await direct_call(s, "bad", fault="none"), m.Completion)
        await wait_until(seen_by([router], br.CLOSED), what="a success closed it")
        assert (await health_report(s))["bad"].transitions[-1].endswith("misconfigured→closed (success)")
        # misconfigured again; a reset closes it too
        assert (await direct_call(s, "bad", fault=m.AUTH)).kind == m.AUTH
        await wait_until(seen_by([router], br.MISCONFIGURED), what="misconfigured again")
        await s.client.rpc.service(HEALTH_RESET, m.HealthReset(provider="bad"), deadline=deadline_in(2000))
        await wait_until(seen_by([router], br.CLOSED), what="the reset closed it")


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
            router = next(a for a in actors if a.kind == "router")
            await wait_until(lambda: health.breakers["bad"].state == br.OPEN, what="opened")
            # stored, not only decided: the router's view is the KV bucket's
            await wait_until(lambda: "bad" in router.breakers.states
                             and router.breakers.states["bad"].state == br.OPEN, what="opened in KV")
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
